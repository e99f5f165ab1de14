"""A consumer keeps going through a restart of its Redis (a private redis-server with AOF,
never the shared one): it backs off, reconnects, and every message ends up acked."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError

from embedstream.config import ConsumerSettings
from embedstream.streams.names import StreamNames
from embedstream.streams.runner import StreamWorker
from tests.support.redis_server import PrivateRedis
from tests.support.streams import (
    Recorder,
    acked_counts,
    pending_count,
    produce,
    settings,
    wait_until,
)

pytestmark = pytest.mark.integration

GROUP = "g"


async def test_consumer_survives_a_redis_restart_and_loses_nothing(
    private_redis: PrivateRedis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    client = redis.Redis.from_url(private_redis.url, socket_timeout=5)
    try:
        ids = await produce(client, names.ingest, 40)
        rec = Recorder(names, "c1", delay=0.1)
        cfg = settings("c1", fast_settings, batch_size=4, max_deliveries=20)
        w = StreamWorker(client, names, names.ingest, GROUP, rec, cfg)
        outages = 0
        wait_out = w._wait_out

        async def counting_wait_out(exc: BaseException) -> None:
            nonlocal outages
            outages += 1
            await wait_out(exc)

        w._wait_out = counting_wait_out  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(w.run(stop))

        async def some_acked() -> bool:
            return len(await acked_counts(client, names, "c1")) >= 8

        await wait_until(some_acked, what="the first acks")
        await private_redis.stop()
        assert not task.done()

        async def saw_outage() -> bool:
            return outages >= 2

        await wait_until(saw_outage, within=15, what="the worker to notice the outage")
        assert not task.done()
        delivered_before_restart = len(rec.deliveries)
        await private_redis.start()

        async def all_acked() -> bool:
            try:
                acked = await acked_counts(client, names, "c1")
                pending = await pending_count(client, names.ingest, GROUP)
            except RedisConnectionError:  # a pooled connection from before the restart
                return False
            return set(acked) == set(ids) and pending == 0

        await wait_until(all_acked, within=60, what="every message to be acked after restart")
        assert not task.done()  # still running: it reconnected instead of crashing
        stop.set()
        stats = await asyncio.wait_for(task, 15)

        assert set(rec.counts) == set(ids)
        assert len(rec.deliveries) > delivered_before_restart  # it went on after the restart
        assert set(await acked_counts(client, names, "c1")) == set(ids)
        assert await client.xlen(names.dlq) == 0
        assert await pending_count(client, names.ingest, GROUP) == 0
        assert stats.acked >= len(ids)
        assert outages >= 2
    finally:
        await client.aclose()
