"""End-to-end fixtures: the real API and workers as separate processes, on the real
Redis, PostgreSQL and an embedded Chroma, isolated by a fresh prefix, schema and folder."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as redis

from embedstream.streams.names import StreamNames

PG_DSN = os.environ.get(
    "EMBEDSTREAM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("EMBEDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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

    def start(self, name: str, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        env = {**self.env, "EMBEDSTREAM_CONSUMER_NAME": name, **extra_env}
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedstream", *args], env=env, stdout=log, stderr=log
        )
        self.procs[name] = proc
        return proc

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

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the API did not become ready\n{self.logs()}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
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
        "EMBEDSTREAM_REDIS_URL": REDIS_URL,
        "EMBEDSTREAM_STREAM_PREFIX": prefix,
        "EMBEDSTREAM_DATABASE_URL": PG_DSN,
        "EMBEDSTREAM_DATABASE_SCHEMA": schema,
        "EMBEDSTREAM_CHROMA_PATH": str(tmp_path / "chroma"),
        "EMBEDSTREAM_PORT": str(port),
        "EMBEDSTREAM_BLOCK_MS": "200",
        "EMBEDSTREAM_VISIBILITY_TIMEOUT_MS": "4000",
        "EMBEDSTREAM_CLAIM_INTERVAL_MS": "500",
        "EMBEDSTREAM_RETRY_BACKOFF_MS": "100",
        "EMBEDSTREAM_DRAIN_TIMEOUT_S": "10",
    }
    env.pop("EMBEDSTREAM_CHROMA_URL", None)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    subprocess.run(
        [sys.executable, "-m", "embedstream", "migrate"], env=env, check=True, capture_output=True
    )
    s = Stack(
        env=env,
        url=f"http://127.0.0.1:{port}",
        names=StreamNames(prefix),
        schema=schema,
        chroma_path=tmp_path / "chroma",
        log_dir=log_dir,
    )
    try:
        yield s
    finally:
        s.stop_all()
        asyncio.run(_cleanup(prefix, schema))


async def _cleanup(prefix: str, schema: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.close()


@pytest.fixture
async def results_reader(stack: Stack) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()
