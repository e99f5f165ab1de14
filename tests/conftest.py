"""Shared fixtures: the real Redis, a fresh key prefix per test, fast consumer settings."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from embedstream.adapters.redis_client import create_redis
from embedstream.config import ConsumerSettings, RedisSettings
from embedstream.streams.names import StreamNames
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.redis_server import PrivateRedis

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("PACT_DO_NOT_TRACK", "true")
# One ONNX export cache for the whole run, whatever a test process's working directory:
# the first worker (or test) that needs the export makes it, every later one reuses it.
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("EMBEDSTREAM_MODEL_CACHE", str(ROOT / ".data" / "models"))

REDIS_URL = os.environ.get("EMBEDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A real local Redis Cluster (three primaries, one replica each) for the session,
    started on first use and torn down at the end."""
    cluster = LocalRedisCluster.start(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_backend() -> str:
    """Which Redis the ``redis_client`` and ``names`` fixtures use: ``single`` (the
    shared server) or ``cluster`` (``redis_cluster``). A module runs its tests on both
    by overriding this fixture with ``params=REDIS_BACKENDS``."""
    return "single"


REDIS_BACKENDS = ["single", "cluster"]


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_backend: str) -> str:
    if redis_backend == "cluster":
        cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return REDIS_URL


@pytest.fixture
def names(prefix: str, redis_backend: str) -> StreamNames:
    return StreamNames(prefix, cluster=redis_backend == "cluster")


@pytest.fixture
async def redis_client(redis_url: str, names: StreamNames) -> AsyncIterator[redis.Redis]:
    client = create_redis(RedisSettings(redis_url=redis_url))
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - environment problem
        pytest.fail(f"the real Redis at {redis_url} does not answer: {exc}")
    yield client
    keys = [key async for key in client.scan_iter(match=names.pattern, count=1000)]
    for key in keys:  # one by one: a cluster refuses a DEL across slots
        await client.delete(key)
    await client.aclose()


@pytest.fixture
def fast_settings() -> ConsumerSettings:
    return ConsumerSettings(
        consumer_name="c1",
        batch_size=10,
        block_ms=50,
        visibility_timeout_ms=600,
        max_deliveries=3,
        retry_backoff_ms=20,
        retry_backoff_max_ms=100,
        claim_interval_ms=50,
        drain_timeout_s=2.0,
    )


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A Redis server of the test's own (on a free port, AOF in ``tmp_path``), for tests
    that stop and restart it; the shared one is never touched."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = PrivateRedis(folder)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
