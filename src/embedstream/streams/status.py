"""The operator view: per stream and group, length, lag, pending, oldest pending age,
consumers with their idle time, and dead letters."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ResponseError

from embedstream.errors.redis import is_no_such_stream
from embedstream.streams.names import StreamNames, as_text


@dataclass
class ConsumerView:
    name: str
    pending: int
    idle_ms: int


@dataclass
class GroupView:
    name: str
    lag: int | None
    pending: int
    oldest_pending_age_ms: int | None
    last_delivered_id: str
    dead_letters: int
    consumers: list[ConsumerView] = field(default_factory=list)
    #: entries delivered to the group so far (Redis 7 ``entries-read``, or the stream's
    #: entries added minus the lag where Redis no longer counts them, after deletions;
    #: None when neither is known): its growth is the group's read rate
    entries_read: int | None = None


@dataclass
class StreamView:
    stream: str
    length: int
    exists: bool
    groups: list[GroupView] = field(default_factory=list)


@dataclass
class StatusReport:
    prefix: str
    streams: list[StreamView]
    dead_letter_stream: str
    dead_letters_total: int
    #: jobs finished so far, counted once each by the job bookkeeping
    jobs_completed: int = 0
    jobs_failed: int = 0
    #: when it was read (epoch ms, Redis' clock): rates are differences between readings
    time_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _id_age_ms(entry_id: str, now_ms: int) -> int:
    return max(0, now_ms - int(entry_id.partition("-")[0]))


async def discover_streams(client: redis.Redis, names: StreamNames) -> list[str]:
    """The pipeline's streams, then any other stream under ``names.prefix`` but the
    dead-letter stream (a SCAN of the keyspace: every key under the prefix is looked at)."""
    streams = list(names.pipeline_streams())
    async for key in client.scan_iter(match=names.pattern, _type="stream", count=500):
        stream = as_text(key)
        if stream not in streams and stream != names.dlq:
            streams.append(stream)
    return streams


async def collect_status(
    client: redis.Redis, names: StreamNames, streams: list[str] | None = None
) -> StatusReport:
    """Read the state of ``streams`` (by default every embedstream stream under
    ``names.prefix``, found with ``discover_streams``)."""
    if streams is None:
        streams = await discover_streams(client, names)
    dlq_counts_raw: dict[Any, Any] = await client.hgetall(names.dlq_counts)
    dlq_counts = {as_text(k): int(v) for k, v in dlq_counts_raw.items()}
    now_ms = await server_time_ms(client)
    views = [await _stream_view(client, stream, dlq_counts, now_ms) for stream in streams]
    completed, failed = await client.hmget(names.job_counts, ["completed", "failed"])
    return StatusReport(
        prefix=names.prefix,
        streams=views,
        dead_letter_stream=names.dlq,
        dead_letters_total=int(await client.xlen(names.dlq)),
        jobs_completed=int(completed or 0),
        jobs_failed=int(failed or 0),
        time_ms=now_ms,
    )


async def server_time_ms(client: redis.Redis) -> int:
    """Redis' clock (entry ids are its timestamps, so ages are measured against it)."""
    try:
        seconds, micros = await client.time()
    except ResponseError:  # TIME renamed or disabled: this host's clock
        return int(time.time() * 1000)
    return int(seconds) * 1000 + int(micros) // 1000


async def _entries_added(client: redis.Redis, stream: str) -> int | None:
    """Entries ever added to the stream (Redis 7 ``XINFO STREAM``'s ``entries-added``)."""
    try:
        info: dict[str, Any] = await client.xinfo_stream(stream)
    except ResponseError as exc:
        if not is_no_such_stream(exc):
            raise
        return None
    added = info.get("entries-added")
    return None if added is None else int(added)


async def _stream_view(
    client: redis.Redis, stream: str, dlq_counts: dict[str, int], now_ms: int
) -> StreamView:
    exists = bool(await client.exists(stream))
    if not exists:
        return StreamView(stream=stream, length=0, exists=False)
    view = StreamView(stream=stream, length=int(await client.xlen(stream)), exists=True)
    added = await _entries_added(client, stream)
    try:
        groups: list[dict[str, Any]] = await client.xinfo_groups(stream)
    except ResponseError as exc:
        if not is_no_such_stream(exc):
            raise
        return view
    for info in groups:
        name = as_text(info["name"])
        pending = int(info["pending"])
        oldest_age = None
        if pending:
            summary: dict[str, Any] = await client.xpending(stream, name)
            oldest_age = _id_age_ms(as_text(summary["min"]), now_ms)
        consumers: list[dict[str, Any]] = await client.xinfo_consumers(stream, name)
        lag = info.get("lag")
        entries_read = info.get("entries-read")
        if entries_read is None and lag is not None and added is not None:
            entries_read = added - int(lag)
        view.groups.append(
            GroupView(
                name=name,
                lag=None if lag is None else int(lag),
                pending=pending,
                oldest_pending_age_ms=oldest_age,
                last_delivered_id=as_text(info["last-delivered-id"]),
                dead_letters=dlq_counts.get(f"{stream}|{name}", 0),
                consumers=[
                    ConsumerView(
                        name=as_text(c["name"]), pending=int(c["pending"]), idle_ms=int(c["idle"])
                    )
                    for c in consumers
                ],
                entries_read=None if entries_read is None else int(entries_read),
            )
        )
    return view
