"""The worker's probe endpoint on the real Redis: liveness follows loop progress (a
blocked handler or a blocked event loop fails it, and it recovers once the batch is
handed back), readiness follows Redis and the stage's store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis
from bench.stack import free_port

from embedstream.adapters.chroma.index import ChromaIndex
from embedstream.config import ChromaSettings, ConsumerSettings, HealthSettings
from embedstream.errors import RetryableError
from embedstream.schemas.envelope import Envelope
from embedstream.streams.messages import Message, Outcome
from embedstream.streams.names import StreamNames
from embedstream.streams.runner import StreamWorker
from embedstream.workers.health import HealthServer, WorkerHealth
from tests.support.redis_server import PrivateRedis
from tests.support.streams import (
    ack_recording,
    acked_counts,
    pending_count,
    produce,
    settings,
    wait_until,
)

pytestmark = pytest.mark.integration

GROUP = "g"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def probe(url: str) -> tuple[int, dict[str, Any]]:
    """GET ``url`` (blocking): (status, JSON body)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class Served:
    """A ``WorkerHealth`` served on a free port for the length of a test."""

    def __init__(self, health: WorkerHealth) -> None:
        self.health = health
        self.server = HealthServer("127.0.0.1", 0, health.routes())
        self.server.start()
        self.base = f"http://127.0.0.1:{self.server.port}"

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        return await asyncio.to_thread(probe, self.base + path)

    async def wait_for(self, path: str, status: int, within: float = 20) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        async def answered() -> bool:
            code, body = await self.get(path)
            seen.update(body)
            return code == status

        await wait_until(answered, within=within, what=f"{path} to answer {status}: {seen}")
        return seen


@pytest.fixture
def stop() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
async def served(stop: asyncio.Event) -> AsyncIterator[Served]:
    health = WorkerHealth(
        HealthSettings(liveness_timeout_s=0.5, readiness_timeout_s=0.5), "test", stop
    )
    s = Served(health)
    yield s
    await asyncio.to_thread(s.server.close)


async def test_blocked_handler_fails_liveness_then_recovers_once_the_batch_is_handed_back(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    served: Served,
    stop: asyncio.Event,
) -> None:
    release = asyncio.Event()
    first_batch = asyncio.Event()
    calls = 0

    async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first batch hangs on a dependency until the test lets go
            first_batch.set()
            await release.wait()
            raise RetryableError("the dependency call gave up")
        return [ack_recording(names, "c1", m.id) for m in messages]

    cfg = settings("c1", fast_settings, max_in_flight=1, batch_size=10, max_deliveries=5)
    worker = StreamWorker(redis_client, names, names.ingest, GROUP, handler, cfg)
    served.health.watch(worker.heartbeat, {"redis": redis_client.ping})
    ids = await produce(redis_client, names.ingest, 5)
    run = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(first_batch.wait(), 20)
        stalled = await served.wait_for("/healthz", 503)
        assert stalled["status"] == "stalled"
        assert "batch" in stalled["detail"], stalled
        assert stalled["in_flight"] == 1
        # readiness is about the dependencies, which answer
        assert (await served.get("/readyz"))[0] == 200

        release.set()  # the handler gives up: its batch goes back to the stream for a retry
        recovered = await served.wait_for("/healthz", 200)
        assert recovered["status"] == "ok"

        async def all_acked() -> bool:
            return set(await acked_counts(redis_client, names, "c1")) == set(ids)

        await wait_until(all_acked, what="the handed-back batch to be retried and acked")
        assert await pending_count(redis_client, names.ingest, GROUP) == 0
        assert (await served.get("/healthz"))[0] == 200
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(run, 20)


async def test_blocked_event_loop_fails_liveness_and_readiness_the_endpoint_still_answers(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    served: Served,
    stop: asyncio.Event,
) -> None:
    """A handler that blocks the event loop stops everything on it; the endpoint runs on
    its own thread and says so (the probe has to run from a thread too: the test's own
    coroutine is stuck on the same loop)."""
    seen: dict[str, tuple[int, dict[str, Any]]] = {}
    saw_stall = threading.Event()
    blocking = threading.Event()

    def watch_probes() -> None:
        blocking.wait(20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            code, body = probe(served.base + "/healthz")
            if code == 503:
                seen["live"] = (code, body)
                seen["ready"] = probe(served.base + "/readyz")
                break
            time.sleep(0.05)
        saw_stall.set()

    async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        if not blocking.is_set():
            blocking.set()
            saw_stall.wait(30)  # blocks the event loop (the bug this probe exists for)
        return [ack_recording(names, "c1", m.id) for m in messages]

    cfg = settings("c1", fast_settings, max_in_flight=2, batch_size=10)
    worker = StreamWorker(redis_client, names, names.ingest, GROUP, handler, cfg)
    served.health.watch(worker.heartbeat, {"redis": redis_client.ping})
    watcher = threading.Thread(target=watch_probes, daemon=True)
    watcher.start()
    ids = await produce(redis_client, names.ingest, 3)
    run = asyncio.create_task(worker.run(stop))
    try:

        async def all_acked() -> bool:
            return set(await acked_counts(redis_client, names, "c1")) == set(ids)

        await wait_until(all_acked, within=40, what="the batch to finish")
        await asyncio.to_thread(watcher.join, 5)
        live_code, live = seen["live"]
        assert live_code == 503 and live["status"] == "stalled", live
        ready_code, ready = seen["ready"]
        assert ready_code == 503, ready
        assert "event loop did not answer" in ready["detail"]
        # the loop runs again: both probes recover
        await served.wait_for("/healthz", 200)
        await served.wait_for("/readyz", 200)
    finally:
        saw_stall.set()
        stop.set()
        await asyncio.wait_for(run, 20)


async def test_readiness_fails_while_redis_is_down_and_liveness_does_not(
    tmp_path: Path, names: StreamNames, fast_settings: ConsumerSettings, stop: asyncio.Event
) -> None:
    server = PrivateRedis(tmp_path)
    await server.start()
    client = redis.Redis.from_url(server.url, socket_timeout=2)
    health = WorkerHealth(
        HealthSettings(liveness_timeout_s=6.0, readiness_timeout_s=0.5), "test", stop
    )
    served = Served(health)

    async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        return [ack_recording(names, "c1", m.id) for m in messages]

    worker = StreamWorker(client, names, names.ingest, GROUP, handler, fast_settings)
    assert (await served.get("/readyz"))[1]["status"] == "starting"
    health.watch(worker.heartbeat, {"redis": client.ping})
    run = asyncio.create_task(worker.run(stop))
    try:
        await served.wait_for("/readyz", 200)
        await server.stop()
        down = await served.wait_for("/readyz", 503)
        assert down["status"] == "unavailable"
        assert down["checks"]["redis"] != "ok"
        # a Redis outage is not a reason to restart the worker: the loop backs off (at
        # most 5 s) and keeps turning, so liveness holds for longer than its bound
        outage_ends = time.monotonic() + 8.0
        while time.monotonic() < outage_ends:
            code, body = await served.get("/healthz")
            assert code == 200, body
            await asyncio.sleep(0.5)
        await server.start()
        await served.wait_for("/readyz", 200)
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)
        assert (await served.get("/readyz"))[1]["status"] == "stopping"
        await asyncio.to_thread(served.server.close)
        await client.aclose()
        await server.stop()


async def test_persist_readiness_checks_postgres(stop: asyncio.Event) -> None:
    """The persist stage's check on its pool: ok against the real PostgreSQL, failing
    once the pool is gone."""
    pool = await asyncpg.create_pool(PG_DSN, min_size=1, max_size=1)
    health = WorkerHealth(HealthSettings(readiness_timeout_s=1.0), "persist", stop)
    served = Served(health)
    try:
        health.watch(health.heartbeat, {"postgres": lambda: pool.fetchval("SELECT 1")})
        code, body = await served.get("/readyz")
        assert (code, body["checks"]) == (200, {"postgres": "ok"})
        await pool.close()
        code, body = await served.get("/readyz")
        assert code == 503 and body["checks"]["postgres"] != "ok", body
    finally:
        await asyncio.to_thread(served.server.close)


async def test_index_readiness_checks_the_chroma_server(
    tmp_path: Path, stop: asyncio.Event
) -> None:
    """The index stage's check asks the Chroma server's heartbeat: ok while `chroma run`
    answers, failing once it is gone."""
    port = free_port()
    chroma = subprocess.Popen(  # noqa: ASYNC220 - a server for the test, not awaited
        [str(Path(sys.executable).with_name("chroma")), "run", "--path", str(tmp_path / "c"),
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )  # fmt: skip
    index = ChromaIndex(ChromaSettings(chroma_url=f"http://127.0.0.1:{port}"))
    health = WorkerHealth(HealthSettings(readiness_timeout_s=2.0), "index", stop)
    served = Served(health)
    try:

        async def opened() -> bool:
            try:
                await index.open()
            except Exception:
                return False
            return True

        await wait_until(opened, within=60, interval=0.2, what="chroma run to answer")
        health.watch(health.heartbeat, {"chroma": index.heartbeat})
        code, body = await served.get("/readyz")
        assert (code, body["checks"]) == (200, {"chroma": "ok"})
        chroma.terminate()
        chroma.wait(30)
        code, body = await served.get("/readyz")
        assert code == 503 and body["checks"]["chroma"] != "ok", body
    finally:
        chroma.kill()
        await asyncio.to_thread(served.server.close)
        await asyncio.to_thread(index.close)


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1), (404, 1)])
def test_probe_command_exits_by_the_status(status: int, exit_code: int) -> None:
    """`python -m embedstream.probe`, the images' HEALTHCHECK, against a served route."""
    from embedstream.workers.health import Reply

    server = HealthServer("127.0.0.1", 0, {"/healthz": lambda: Reply.json(status, {})})
    server.start()
    try:
        env = {**os.environ, "EMBEDSTREAM_HEALTH_PORT": str(server.port)}
        target = "worker" if status != 404 else f"http://127.0.0.1:{server.port}/nowhere"
        done = subprocess.run(
            [sys.executable, "-m", "embedstream.probe", target], env=env, capture_output=True
        )
        assert done.returncode == exit_code, done.stderr
    finally:
        server.close()
