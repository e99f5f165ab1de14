"""Start and stop embedstream processes (API and workers) on this machine, isolated by a
fresh key prefix, PostgreSQL schema and Chroma folder. Used by the end-to-end tests and
the pipeline benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from embedstream.adapters.redis_client import create_redis
from embedstream.config import RedisSettings
from embedstream.streams.names import StreamNames

MODEL_CACHE = Path(__file__).resolve().parents[1] / ".data" / "models"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    """A running deployment: start and kill processes, reach the API and the stores."""

    env: dict[str, str]
    url: str
    names: StreamNames
    schema: str
    chroma_path: Path
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api_key: str = ""

    @property
    def headers(self) -> dict[str, str]:
        """The credential for the API (an admin key of tenant ``bench``)."""
        return {"X-API-Key": self.api_key}

    def create_key(self, tenant: str, *scopes: str, name: str = "extra") -> str:
        """A new API key of ``tenant`` (``embedstream keys create``), e.g. for a second
        tenant."""
        return create_api_key(self.env, tenant, *(scopes or ("admin",)), name=name)

    def start(self, name: str, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        env = {**self.env, "EMBEDSTREAM_CONSUMER_NAME": name, **extra_env}
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedstream", *args], env=env, stdout=log, stderr=log
        )
        self.procs[name] = proc
        return proc

    def start_chroma_server(self, timeout: float = 60.0) -> str:
        """``chroma run`` on the stack's Chroma folder; every process started afterwards
        uses it (``EMBEDSTREAM_CHROMA_URL``): the API searches only an index served by a
        Chroma server, which is what lets it read what the index workers write."""
        binary = Path(sys.executable).with_name("chroma")
        port = free_port()
        log = open(self.log_dir / "chroma.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs["chroma"] = subprocess.Popen(
            [str(binary), "run", "--path", str(self.chroma_path), "--port", str(port)],
            env={**self.env, "ANONYMIZED_TELEMETRY": "False"},
            stdout=log,
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.procs["chroma"].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the Chroma server did not start\n{self.logs()}")
            time.sleep(0.2)
        self.env["EMBEDSTREAM_CHROMA_URL"] = url
        return url

    def start_worker(self, kind: str, name: str | None = None) -> subprocess.Popen[bytes]:
        return self.start(name or f"{kind}-{len(self.procs)}", "worker", kind)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = None
        self.procs.clear()
        return codes

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )

    def wait_ready(self, timeout: float = 60.0, *, url: str | None = None) -> None:
        """Until ``url`` (the API by default) answers ``/readyz``; fails at once when any
        process of the stack has exited."""
        url = url or self.url
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}\n{self.logs()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{url} did not become ready\n{self.logs()}")


def stack_env(
    tmp: Path, *, redis_url: str, database_url: str, **overrides: str
) -> tuple[dict[str, str], StreamNames, str, int]:
    """Environment for an isolated deployment: (env, names, schema, api port)."""
    prefix = f"e2e{uuid.uuid4().hex[:10]}"
    schema = f"t_{uuid.uuid4().hex[:12]}"
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "EMBEDSTREAM_ENV": "test",
        "EMBEDSTREAM_LOG_LEVEL": "INFO",
        "EMBEDSTREAM_REDIS_URL": redis_url,
        "EMBEDSTREAM_STREAM_PREFIX": prefix,
        "EMBEDSTREAM_DATABASE_URL": database_url,
        "EMBEDSTREAM_DATABASE_SCHEMA": schema,
        "EMBEDSTREAM_CHROMA_PATH": str(tmp / "chroma"),
        "EMBEDSTREAM_PORT": str(port),
        # every stack shares one ONNX export (made once, by the first embed worker)
        "EMBEDSTREAM_MODEL_CACHE": os.environ.get("EMBEDSTREAM_MODEL_CACHE", str(MODEL_CACHE)),
        **overrides,
    }
    env.pop("EMBEDSTREAM_CHROMA_URL", None)
    partitions = int(env.get("EMBEDSTREAM_PARTITIONS", "1"))
    redis = RedisSettings(redis_url=redis_url, stream_prefix=prefix, partitions=partitions)
    return env, redis.names(), schema, port


STACK_TENANT = "bench"
"""the tenant of the stack's own admin key"""


def create_api_key(env: dict[str, str], tenant: str, *scopes: str, name: str) -> str:
    """``embedstream keys create``: the new key (printed once, on the last line)."""
    scope_args = [arg for scope in scopes for arg in ("--scope", scope)]
    created = subprocess.run(
        [sys.executable, "-m", "embedstream", "keys", "create", "--tenant", tenant,
         *scope_args, "--name", name],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return created.stdout.strip().splitlines()[-1]


def create_stack(tmp: Path, *, redis_url: str, database_url: str, **overrides: str) -> Stack:
    """Migrate a fresh schema and return a Stack ready to start processes."""
    env, names, schema, port = stack_env(
        tmp, redis_url=redis_url, database_url=database_url, **overrides
    )
    log_dir = tmp / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "embedstream", "migrate"], env=env, check=True, capture_output=True
    )
    api_key = create_api_key(env, STACK_TENANT, "admin", name="stack")
    env["EMBEDSTREAM_API_KEY"] = api_key  # for `embedstream ingest`
    env.setdefault("EMBEDSTREAM_RATE_LIMIT", "")  # benchmarks and tests poll freely
    return Stack(
        api_key=api_key,
        env=env,
        url=f"http://127.0.0.1:{port}",
        names=names,
        schema=schema,
        chroma_path=tmp / "chroma",
        log_dir=log_dir,
    )


async def remove_stack_data(stack: Stack) -> None:
    """Delete the stack's Redis keys and drop its PostgreSQL schema."""
    import asyncpg

    client = create_redis(RedisSettings(redis_url=stack.env["EMBEDSTREAM_REDIS_URL"]))
    keys = [k for pattern in stack.names.patterns() async for k in client.scan_iter(match=pattern)]
    for key in keys:  # one by one: a cluster refuses a multi-key DEL across slots
        await client.delete(key)
    await client.aclose()
    conn = await asyncpg.connect(stack.env["EMBEDSTREAM_DATABASE_URL"])
    await conn.execute(f'DROP SCHEMA IF EXISTS "{stack.schema}" CASCADE')
    await conn.close()
