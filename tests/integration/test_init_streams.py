"""``embedstream init`` on the real Redis: every stream and stage group exists before any
worker, lag is readable at once, and running it again changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis.asyncio as redis

from embedstream.streams.init import init_streams
from embedstream.streams.names import StreamNames
from tests.conftest import REDIS_URL
from tests.support.streams import produce

pytestmark = pytest.mark.integration


async def groups(client: redis.Redis, stream: str) -> dict[str, dict[str, object]]:
    rows = await client.xinfo_groups(stream)
    return {row["name"].decode(): row for row in rows}


async def test_init_creates_every_stage_group_so_lag_is_readable_before_any_worker(
    redis_client: redis.Redis, names: StreamNames
) -> None:
    report = await init_streams(redis_client, names)
    assert {(r.stream, r.group) for r in report if r.created} == {
        (names.ingest, "embedder"),
        (names.embedded, "indexer"),
        (names.embedded, "persister"),
        (names.results, None),
        (names.dlq, None),
    }
    for stream in (names.results, names.dlq):
        assert await redis_client.exists(stream) and await redis_client.xlen(stream) == 0

    await produce(redis_client, names.ingest, 3)
    ingest_groups = await groups(redis_client, names.ingest)
    assert ingest_groups["embedder"]["lag"] == 3  # what KEDA's lagCount trigger reads
    assert set(await groups(redis_client, names.embedded)) == {"indexer", "persister"}


async def test_init_twice_changes_nothing_and_never_trims(
    redis_client: redis.Redis, names: StreamNames
) -> None:
    await init_streams(redis_client, names)
    await produce(redis_client, names.ingest, 2)
    await produce(redis_client, names.results, 4)
    await redis_client.xreadgroup("embedder", "c1", {names.ingest: ">"}, count=1)
    again = await init_streams(redis_client, names)
    assert not any(r.created for r in again)
    assert await redis_client.xlen(names.results) == 4
    embedder = (await groups(redis_client, names.ingest))["embedder"]
    assert (embedder["pending"], embedder["lag"]) == (1, 1)


async def test_the_cli_init_and_migrate_create_the_groups(
    redis_client: redis.Redis, names: StreamNames
) -> None:
    env = {
        **os.environ,
        "EMBEDSTREAM_REDIS_URL": REDIS_URL,
        "EMBEDSTREAM_STREAM_PREFIX": names.prefix,
    }
    done = subprocess.run(
        [sys.executable, "-m", "embedstream", "init"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"created {names.ingest} group embedder" in done.stdout
    assert set(await groups(redis_client, names.embedded)) == {"indexer", "persister"}
    again = subprocess.run(
        [sys.executable, "-m", "embedstream", "init"], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and "created" not in again.stdout, again.stdout
