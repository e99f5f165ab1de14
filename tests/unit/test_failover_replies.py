"""What a Redis Cluster answers during a failover is waited out, never taken for an
answer: redis-py raises ``ClusterDownError`` ("The cluster is down", without the
CLUSTERDOWN code) as a ``ResponseError``, which once crashed every worker blocked on a
read, and made a change of partitions look safe ("no such stream")."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
from redis.exceptions import ClusterDownError, ResponseError, TryAgainError

from embedstream.config import ConsumerSettings
from embedstream.errors.redis import is_failover_reply, is_no_such_stream
from embedstream.streams.names import StreamNames
from embedstream.streams.partitions import check_partitions
from embedstream.streams.runner import StreamWorker


@pytest.mark.parametrize(
    "error",
    [
        ClusterDownError("The cluster is down"),
        TryAgainError("Multiple keys request during rehashing of slot"),
        ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"),
        ResponseError("CLUSTERDOWN The cluster is down"),
    ],
)
def test_failover_replies_are_recognised_by_class_or_code(error: ResponseError) -> None:
    assert is_failover_reply(error)
    assert not is_no_such_stream(error)


def test_other_replies_are_not_failovers() -> None:
    assert not is_failover_reply(ResponseError("NOGROUP No such key 'x' or consumer group 'g'"))
    assert is_no_such_stream(ResponseError("no such key"))


async def test_a_read_answered_clusterdown_is_waited_out(cfg: ConsumerSettings) -> None:
    client = fakeredis.FakeAsyncRedis()
    names = StreamNames("t")

    async def handler(messages: Any) -> Any:
        return []

    worker: StreamWorker[Any] = StreamWorker(client, names, names.ingest, "g", handler, cfg)
    await worker.consumer.ensure_group()
    answers: list[BaseException | None] = [ClusterDownError("The cluster is down"), None]
    real_read = worker.consumer.read_new

    async def read_new(count: int, block_ms: int | None) -> Any:
        error = answers.pop(0) if answers else None
        if error is not None:
            raise error
        return await real_read(count, block_ms)

    worker.consumer.read_new = read_new  # type: ignore[method-assign]
    worker._own_done = True  # no own pending entries to take back
    worker._next_claim = float("inf")  # and no reclaim due (Lua: not in fakeredis)
    stop = asyncio.Event()
    assert await worker._next_entries(stop, burst=False) == []  # waited out, not raised
    await client.xadd(names.ingest, {"k": "v"})
    [(_, fields, attempt)] = await worker._next_entries(stop, burst=False)
    assert (fields, attempt) == ({b"k": b"v"}, 1)


class ClusterDownOnXinfo(fakeredis.FakeAsyncRedis):
    async def xinfo_groups(self, name: Any) -> Any:
        raise ClusterDownError("The cluster is down")


async def test_a_change_of_partitions_is_not_allowed_when_the_streams_cannot_be_read() -> None:
    client = ClusterDownOnXinfo()
    await client.set(StreamNames("t", partitions=3).partitions_key, 3)
    with pytest.raises(ClusterDownError):
        await check_partitions(client, StreamNames("t", partitions=2))
    assert await client.get(StreamNames("t").partitions_key) == b"3"  # unchanged


@pytest.fixture
def cfg() -> ConsumerSettings:
    return ConsumerSettings(consumer_name="c1", batch_size=10, block_ms=50, claim_interval_ms=50)
