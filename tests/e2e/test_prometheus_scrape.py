"""A real Prometheus (Debian's `prometheus`) scrapes the API's /metrics, evaluates the
recording rules of deploy/prometheus and answers a PromQL query for the embedder's lag.
Skipped where the server is not installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from bench.stack import free_port

from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "recording-rules.yml"
DOCUMENTS = 3


def fast_rules(tmp: Path) -> Path:
    """The recording rules, evaluated every second."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
    path = tmp / "recording-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def query(url: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def wait_for_value(url: str, promql: str, expected: float, within: float = 60) -> None:
    deadline = time.monotonic() + within
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            last = query(url, promql)
        except httpx.HTTPError:
            last = []
        if len(last) == 1 and float(last[0]["value"][1]) == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"{promql} did not become {expected}: {last}")


def test_prometheus_scrapes_the_api_and_answers_the_embedders_lag(
    stack: Stack, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed (scripts/setup.sh installs it)")
    subprocess.run(
        [sys.executable, "-m", "embedstream", "init"], env=stack.env, check=True,
        capture_output=True,
    )  # fmt: skip
    stack.start("api", "api")
    stack.wait_ready()
    documents = [{"id": f"p{n}", "text": f"text {n}"} for n in range(DOCUMENTS)]
    response = httpx.post(
        f"{stack.url}/v1/documents", json={"documents": documents}, headers=stack.headers
    )
    assert response.status_code == 202, response.text

    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(fast_rules(tmp_path))],
        "scrape_configs": [
            {
                "job_name": "embedstream-api",
                "static_configs": [{"targets": [stack.url.removeprefix("http://")]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - lives with the process
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ingest = f'stream="{stack.names.ingest}", group="embedder"'
        wait_for_value(url, f"embedstream_group_lag{{{ingest}}}", DOCUMENTS)
        # the recording rule the dashboard and the alerts read
        wait_for_value(url, f"embedstream:group_lag:max{{{ingest}}}", DOCUMENTS)
        accepted = 'embedstream_documents_accepted_total{operation="upsert"}'
        wait_for_value(url, accepted, DOCUMENTS)
        (target,) = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        assert target["health"] == "up", target
    except AssertionError:
        log.flush()
        print((tmp_path / "prometheus.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
