"""The number of partitions a deployment's streams are laid out in, recorded in Redis,
and the refusal to start with another one while work is pending.

A document's partition is its hash modulo the number of partitions
(``embedstream.streams.names.partition_of``): with another number, its next command
would go to another stream than the ones before it, and a process with another number
would not read the streams holding the pending work. So every process checks, before it
reads or writes: the first one records the number (``{prefix}:partitions``; absent
means 1, the layout of every release before partitions); a process configured with
another number is refused while any stream of the recorded layout still has entries
waiting or pending; once that layout is drained, the new number is recorded and used.

Changing the number: stop the API (or hold producers), let the workers drain
(``embedstream status``: no lag, nothing pending), stop them, start everything with the
new ``EMBEDSTREAM_PARTITIONS``. The streams of the old layout stay until trimmed or
deleted; job records and results are not partitioned and are kept.

Versions are stream ids, which are times on the node that holds the stream: on a
cluster, keep the nodes' clocks in sync (NTP), or a document that moved partitions
could get a version below its last one and be refused by the stores as out of order.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from redis.exceptions import ResponseError

from embedstream.errors.redis import is_no_such_stream
from embedstream.streams.names import PIPELINE, StreamNames, as_text


class PartitionsChanged(RuntimeError):
    """The configured number of partitions differs from the recorded one while the
    recorded layout has work pending."""

    def __init__(self, configured: int, recorded: int, busy: list[str]) -> None:
        super().__init__(
            f"EMBEDSTREAM_PARTITIONS={configured}, but this deployment's streams are laid "
            f"out in {recorded} partition(s) and {', '.join(busy)} still hold(s) "
            f"unprocessed entries. Start with EMBEDSTREAM_PARTITIONS={recorded}, let the "
            "workers drain (`embedstream status`: no lag, nothing pending), then restart "
            f"every process with {configured}."
        )
        self.configured, self.recorded = configured, recorded


async def recorded_partitions(client: redis.Redis, names: StreamNames) -> int | None:
    raw = await client.get(names.partitions_key)
    return None if raw is None else int(raw)


async def check_partitions(client: redis.Redis, names: StreamNames) -> None:
    """Record ``names.partitions`` or agree with the recorded number (module doc);
    ``PartitionsChanged`` when the recorded layout differs and has work pending."""
    recorded = await recorded_partitions(client, names)
    if recorded is None:
        if names.partitions == 1:
            return  # the unpartitioned layout needs no record (and old releases wrote none)
        recorded = 1
    if recorded == names.partitions:
        await client.set(names.partitions_key, names.partitions, nx=True)
        return
    old = StreamNames(names.prefix, cluster=names.cluster, partitions=recorded)
    busy = [stream for stream in old.ingest_streams() + old.embedded_streams()
            if await _has_work(client, stream)]  # fmt: skip
    if busy:
        raise PartitionsChanged(names.partitions, recorded, busy)
    await client.set(names.partitions_key, names.partitions)


async def _has_work(client: redis.Redis, stream: str) -> bool:
    """Entries of the stream not yet delivered to, or not acknowledged by, a pipeline
    group (or entries with no pipeline group to read them yet)."""
    try:
        groups: list[dict[Any, Any]] = await client.xinfo_groups(stream)
    except ResponseError as exc:
        if is_no_such_stream(exc):
            return False
        raise  # e.g. CLUSTERDOWN: not knowing is not "no work"
    ours = {stage.group for stage in PIPELINE}
    mine = [g for g in groups if as_text(g.get("name")) in ours]
    if not mine:
        return bool(await client.xlen(stream))
    for group in mine:
        lag = group.get("lag")
        if int(group.get("pending") or 0) > 0 or lag is None or int(lag) > 0:
            return True
    return False
