"""The status reading shared by a process's callers (the console polls it per tab)."""

from __future__ import annotations

import redis.asyncio as redis

from embedstream.streams.names import StreamNames
from embedstream.streams.status_cache import StatusCache


def stream_names(report: object) -> set[str]:
    return {s.stream for s in report.streams}  # type: ignore[attr-defined]


async def test_readings_are_shared_and_streams_found_again_later(
    redis_client: redis.Redis, names: StreamNames
) -> None:
    await redis_client.xadd(names.ingest, {"a": "1"})
    shared = StatusCache(redis_client, names, ttl_s=3600, discover_every_s=3600)
    first = await shared.read()
    await redis_client.xadd(names.ingest, {"a": "2"})
    assert await shared.read() is first  # within the ttl: the same reading

    fresh = StatusCache(redis_client, names, ttl_s=0, discover_every_s=3600)
    before = await fresh.read()
    [ingest] = [s for s in before.streams if s.stream == names.ingest]
    assert ingest.length == 2
    other = names.key("mine")
    await redis_client.xadd(other, {"a": "1"})
    assert other not in stream_names(await fresh.read())  # not looked for again yet
    fresh.discover_every_s = 0
    assert other in stream_names(await fresh.read())
