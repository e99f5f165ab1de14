"""compose.yaml, checked by Docker Compose itself (no engine needed for `config`): it
resolves with nothing but the checked-in .env.example, refuses to resolve without the
secrets (naming them), carries no secret itself, and gives every service a health check."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import ROOT, compose_binary, run

SECRETS = ("EMBEDSTREAM_JWT_SECRET", "POSTGRES_PASSWORD")


def env_file(values: dict[str, str], tmp: Path) -> str:
    path = tmp / "env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return str(path)


def example_env() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def resolved(env_path: str) -> dict[str, Any]:
    done = run(compose_binary(), "-f", "compose.yaml", "--env-file", env_path, "config",
               "--format", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def test_compose_resolves_with_the_example_env_alone() -> None:
    done = run(compose_binary(), "-f", "compose.yaml", "--env-file", ".env.example",
               "config", "--quiet")  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_a_missing_secret_stops_compose_with_a_message_naming_it(tmp_path: Path) -> None:
    for secret in SECRETS:
        values = {k: v for k, v in example_env().items() if k != secret}
        done = run(compose_binary(), "-f", "compose.yaml", "--env-file",
                   env_file(values, tmp_path), "config", "--quiet")  # fmt: skip
        assert done.returncode != 0, f"compose resolved without {secret}"
        assert f"set {secret} in .env" in done.stderr, done.stderr
        values[secret] = ""  # present but empty is missing too
        done = run(compose_binary(), "-f", "compose.yaml", "--env-file",
                   env_file(values, tmp_path), "config", "--quiet")  # fmt: skip
        assert done.returncode != 0 and secret in done.stderr


def test_compose_holds_no_secret_and_passes_them_from_env(tmp_path: Path) -> None:
    text = (ROOT / "compose.yaml").read_text()
    for secret in SECRETS:
        assert example_env()[secret] not in text
        for match in re.finditer(r"^\s*(\w+):\s*(.+)$", text, re.M):
            key, value = match.groups()
            if key in ("EMBEDSTREAM_JWT_SECRET", "POSTGRES_PASSWORD", "PGPASSWORD"):
                assert value.startswith("${") and ":?" in value, (key, value)
    values = {**example_env(), "EMBEDSTREAM_JWT_SECRET": "x" * 8 + "Q1w2E3r4T5y6U7i8O9p0" * 2}
    config = resolved(env_file(values, tmp_path))
    api = config["services"]["api"]["environment"]
    assert api["EMBEDSTREAM_JWT_SECRET"] == values["EMBEDSTREAM_JWT_SECRET"]
    assert "EMBEDSTREAM_JWT_SECRET" not in config["services"]["worker-embed"]["environment"]


def test_every_service_has_a_health_check_and_the_api_restarts_and_scales() -> None:
    config = resolved(str(ROOT / ".env.example"))
    services = config["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no health check"
        if name == "migrate":  # a one-shot job: its exit status is what others wait on
            assert check.get("disable") is True
        else:
            assert check["test"][0] == "CMD" and len(check["test"]) > 1, name
    api = services["api"]
    assert api["restart"] == "unless-stopped"
    (port,) = api["ports"]
    assert "-" in str(port["published"]), "a host port range lets `--scale api=N` start N"
    for stage in ("worker-embed", "worker-index", "worker-persist"):
        worker = services[stage]
        assert worker["command"] == ["embedstream", "worker", stage.removeprefix("worker-")]
        drain = float(worker["environment"]["EMBEDSTREAM_DRAIN_TIMEOUT_S"])
        grace = worker["stop_grace_period"]
        assert grace.endswith("s") and float(grace[:-1]) > drain + 5, (stage, grace)
        assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["embedstream", "migrate"]


def test_chroma_health_check_asks_the_heartbeat_endpoint() -> None:
    check = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["chroma"]
    script = check["healthcheck"]["test"][-1]
    assert "/api/v2/heartbeat" in script and "/dev/tcp/127.0.0.1/8000" in script
    # the smoke test (tests/e2e/test_compose_smoke.py) runs this script against a real
    # `chroma run`
