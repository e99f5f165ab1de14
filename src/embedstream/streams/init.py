"""``embedstream init``: every stream and every stage's consumer group, before any worker.

An autoscaler that reads a group's lag (KEDA's Redis Streams scaler) needs the group to
exist while the stage has no replica; otherwise it reads NOGROUP and never wakes the
stage. Workers create their own group too (the same call), so running this is safe at any
time, as often as wanted: nothing that exists is changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import ResponseError

from embedstream.errors.redis import is_busygroup
from embedstream.streams.names import StreamNames
from embedstream.streams.partitions import check_cluster_mode

# Creates an empty stream (XADD then trim to nothing) only where the key is missing, in
# one atomic step: an existing stream is never trimmed.
_CREATE_EMPTY_STREAM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '0', '*', 'init', '1')
return 1
"""


@dataclass(frozen=True)
class Created:
    """What ``init_streams`` found for one stream (and group)."""

    stream: str
    group: str | None
    created: bool


async def init_streams(client: redis.Redis, names: StreamNames) -> list[Created]:
    """Create each stage's group (at the start of its stream, creating the stream), then
    the streams no stage reads from (results, dead letters). Idempotent."""
    await check_cluster_mode(client, names)
    report: list[Created] = []
    for stream, group in names.stage_groups():
        try:
            await client.xgroup_create(stream, group, id="0", mkstream=True)
            report.append(Created(stream, group, True))
        except ResponseError as exc:
            if not is_busygroup(exc):
                raise
            report.append(Created(stream, group, False))
    create_empty = client.register_script(_CREATE_EMPTY_STREAM)
    for stream in (names.results, names.dlq):
        created = await create_empty(keys=[stream])
        report.append(Created(stream, None, bool(created)))
    return report
