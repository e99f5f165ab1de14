"""compose.yaml run without a container engine: each of our services (those compose
builds) runs its command as a local process with the environment its container would get
(the image's ENV under the service's `environment`, as Docker Compose resolves it from
.env.example alone). The other services map to this machine: redis to the local Redis
(fresh key prefix), postgres to the local PostgreSQL (fresh schema), chroma to a local
`chroma run`. In the order of `depends_on`, each service must pass its own health check;
then a key is made the documented way, a document goes in through the api service and
its job completes. Any service exiting, or a required variable missing, fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from bench.stack import free_port

from embedstream.streams.names import StreamNames
from tests.deploy.test_images import instructions
from tests.deploy.tools import ROOT, compose_binary
from tests.e2e.conftest import PG_DSN, REDIS_URL
from tests.e2e.stores import wait_for_results

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# The documented first-key step (README "Deploy"), run here in the api service.
FIRST_KEY = (
    "docker compose run --rm api embedstream keys create --tenant acme "
    "--scope documents:write --scope jobs:read --name first-key"
)


def resolve_compose() -> dict[str, Any]:
    """compose.yaml as Docker Compose resolves it with .env.example as the .env."""
    done = subprocess.run(
        [compose_binary(), "-f", "compose.yaml", "--env-file", ".env.example",
         "config", "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"compose.yaml does not resolve: {done.stderr}"
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def image_env(dockerfile: str) -> dict[str, str]:
    """The ENV of a Dockerfile's last stage (what the container starts with)."""
    env: dict[str, str] = {}
    stages = [i for i, (word, _) in enumerate(instructions(dockerfile)) if word == "FROM"]
    for word, args in instructions(dockerfile)[stages[-1] :]:
        if word == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", args):
                env[key] = value.replace("$PATH", "")
    return env


class Deployment:
    """Our services as local processes, with service names mapped to this machine."""

    def __init__(self, config: dict[str, Any], tmp: Path) -> None:
        self.config = config
        self.tmp = tmp
        self.prefix = f"smoke{uuid.uuid4().hex[:8]}"
        self.schema = f"smoke_{uuid.uuid4().hex[:10]}"
        self.chroma_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, dict[str, int]] = {}

    @property
    def ours(self) -> list[str]:
        return [name for name, s in self.config["services"].items() if "build" in s]

    def environment(self, name: str) -> dict[str, str]:
        """The container's environment (image ENV, then the service's), with the
        service host names, ports and the data directory mapped to this machine."""
        service = self.config["services"][name]
        merged = {**image_env(service["build"]["dockerfile"]), **service["environment"]}
        data = self.tmp / name / "data"
        data.mkdir(parents=True, exist_ok=True)
        ports = self.ports.setdefault(name, {})
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        env.pop("PATH", None)
        env["PATH"] = os.environ["PATH"]
        for key, value in merged.items():
            if key == "PATH":
                continue
            value = value.replace("/data", str(data))
            if key.endswith("_URL"):
                value = self.local_url(value)
            if key in ("EMBEDSTREAM_PORT", "EMBEDSTREAM_HEALTH_PORT"):
                value = str(ports.setdefault(key, free_port()))
            if key in ("EMBEDSTREAM_HOST", "EMBEDSTREAM_HEALTH_HOST"):
                value = "127.0.0.1"
            if key == "EMBEDSTREAM_MODEL_CACHE" and "EMBEDSTREAM_MODEL_CACHE" in os.environ:
                # the image exports the model at build time; here the suite's cache holds
                # the same export
                value = os.environ["EMBEDSTREAM_MODEL_CACHE"]
            env[key] = value
        env["EMBEDSTREAM_STREAM_PREFIX"] = self.prefix
        env["EMBEDSTREAM_DATABASE_SCHEMA"] = self.schema
        env["EMBEDSTREAM_CONSUMER_NAME"] = name
        return env

    def local_url(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.hostname == "redis":
            return REDIS_URL
        if parts.hostname == "postgres":
            return PG_DSN  # the local test database, trust auth; the schema is fresh
        if parts.hostname == "chroma":
            return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.chroma_port}"))
        return url

    def command(self, argv: list[str]) -> list[str]:
        assert argv[0] == "embedstream", argv
        return [sys.executable, "-m", "embedstream", *argv[1:]]

    def start(self, name: str) -> None:
        service = self.config["services"][name]
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(
            self.command(service["command"]),
            env=self.environment(name),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def start_chroma(self) -> None:
        chroma = Path(sys.executable).with_name("chroma")
        log = open(self.tmp / "chroma.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs["chroma"] = subprocess.Popen(
            [str(chroma), "run", "--path", str(self.tmp / "chroma"), "--port",
             str(self.chroma_port)],
            stdout=log, stderr=log, start_new_session=True,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )  # fmt: skip

    def health_check(self, name: str) -> subprocess.CompletedProcess[bytes]:
        """Run the service's compose health check here (its ports mapped)."""
        test = self.config["services"][name]["healthcheck"]["test"]
        assert test[0] == "CMD", test
        argv = list(test[1:])
        if name == "chroma":
            argv[-1] = argv[-1].replace("/8000", f"/{self.chroma_port}")
            return subprocess.run(argv, capture_output=True, timeout=10)
        argv = [sys.executable, *argv[1:]] if argv[0] == "python" else argv
        return subprocess.run(argv, env=self.environment(name), capture_output=True, timeout=10)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None and name != "migrate":
                raise AssertionError(f"{name} exited with {proc.returncode}\n{self.logs()}")

    def wait_healthy(self, name: str, within: float = 180) -> None:
        deadline = time.monotonic() + within
        while True:
            self.check_alive()
            done = self.health_check(name)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} is not healthy: {done.stderr.decode()[-500:]}\n{self.logs()}"
                )
            time.sleep(0.5)

    def run_once(self, name: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv),
            env=self.environment(name),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.tmp.glob("*.log"))
        )

    def stop(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = None
        return codes


def start_order(config: dict[str, Any], names: list[str]) -> list[str]:
    """Services in an order that starts each after what it depends on."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dependency in config["services"][name].get("depends_on", {}):
            visit(dependency)
        order.append(name)

    for name in names:
        visit(name)
    return order


async def drop(deployment: Deployment) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{deployment.prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f'DROP SCHEMA IF EXISTS "{deployment.schema}" CASCADE')
    await conn.close()


def test_compose_services_start_take_a_key_and_complete_a_job(tmp_path: Path) -> None:
    config = resolve_compose()
    deployment = Deployment(config, tmp_path)
    assert set(deployment.ours) == {
        "migrate", "api", "worker-embed", "worker-index", "worker-persist"
    }  # fmt: skip
    readme = (ROOT / "README.md").read_text()
    assert FIRST_KEY in " ".join(readme.split()), "the README documents the first-key step"
    try:
        for name in start_order(config, list(config["services"])):
            if name in ("redis", "postgres"):
                continue  # this machine's, always running
            if name == "chroma":
                deployment.start_chroma()
                deployment.wait_healthy("chroma", within=60)
                continue
            depends = config["services"][name].get("depends_on", {})
            for dependency, condition in depends.items():
                if condition["condition"] == "service_completed_successfully":
                    code = deployment.procs[dependency].wait(timeout=120)
                    assert code == 0, f"{dependency} failed\n{deployment.logs()}"
            deployment.start(name)
            if name != "migrate":
                deployment.wait_healthy(name)

        # lag is readable before any document: migrate ran `init`
        names = StreamNames(deployment.prefix)
        key_args = FIRST_KEY.split("embedstream", 1)[1].split()
        created = deployment.run_once("api", ["embedstream", *key_args])
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("es_"), created.stdout

        api = f"http://127.0.0.1:{deployment.ports['api']['EMBEDSTREAM_PORT']}"
        response = httpx.post(
            f"{api}/v1/documents",
            json={"documents": [{"id": "smoke-1", "text": "Compose starts as shipped."}]},
            headers={"X-API-Key": key},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        job = response.json()["job_id"]

        async def results() -> dict[str, list[Any]]:
            client = redis.Redis.from_url(REDIS_URL)
            try:
                return await wait_for_results(client, names, {job}, timeout=240)
            finally:
                await client.aclose()

        events = asyncio.run(results())
        assert [e.type for e in events[job] if e.type.startswith("job.")] == ["job.completed.v1"], (
            deployment.logs()
        )
        # each worker's readiness covers Redis and its stage's store
        stores = {"worker-embed": set(), "worker-index": {"chroma"}, "worker-persist": {"postgres"}}
        for name, store in stores.items():
            port = deployment.ports[name]["EMBEDSTREAM_HEALTH_PORT"]
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            assert set(ready.json()["checks"]) == {"redis", *store}, ready.text
        deployment.check_alive()
    finally:
        codes = deployment.stop()
        asyncio.run(drop(deployment))
    workers = {k: v for k, v in codes.items() if k.startswith("worker-")}
    assert all(code == 0 for code in workers.values()), (codes, deployment.logs())
