"""Consumer processes that die (SIGKILL) or are asked to stop (SIGTERM) mid-batch, and a
second replica that completes their work. The consumer process is
tests/support/consumer_proc.py; the second replica runs in the test's event loop."""

from __future__ import annotations

import asyncio
import signal

import pytest
import redis.asyncio as redis

from embedstream.config import ConsumerSettings
from embedstream.streams.consumer import StreamConsumer
from embedstream.streams.names import StreamNames
from embedstream.streams.runner import StreamWorker
from tests.conftest import REDIS_URL
from tests.support.processes import ConsumerProcess
from tests.support.streams import (
    Recorder,
    acked_counts,
    pending_count,
    pending_rows,
    produce,
    settings,
    wait_until,
)

pytestmark = pytest.mark.integration

GROUP = "g"
VISIBILITY_MS = 600


async def run_survivor_until_all_acked(
    client: redis.Redis,
    names: StreamNames,
    base: ConsumerSettings,
    expected: set[str],
    already_acked: set[str] = frozenset(),  # type: ignore[assignment]
) -> Recorder:
    """A second replica (non-burst, so it waits for entries to become reclaimable) runs
    until every expected id is acked by someone and nothing is pending."""
    rec = Recorder(names, "survivor")
    cfg = settings("survivor", base, visibility_timeout_ms=VISIBILITY_MS, claim_interval_ms=50)
    stop = asyncio.Event()
    task = asyncio.create_task(StreamWorker(client, names, names.ingest, GROUP, rec, cfg).run(stop))

    async def done() -> bool:
        acked = set(await acked_counts(client, names, "survivor")) | set(already_acked)
        return acked == expected and await pending_count(client, names.ingest, GROUP) == 0

    try:
        await wait_until(done, within=30, what="the survivor to complete the work")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    return rec


async def test_sigkill_mid_batch_entries_are_completed_by_another_replica(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    await StreamConsumer(redis_client, names, names.ingest, GROUP, "x").ensure_group()
    ids = await produce(redis_client, names.ingest, 6)
    victim = await ConsumerProcess.start(
        REDIS_URL, names, "victim", "--sleep", "120", "--visibility-ms", str(VISIBILITY_MS)
    )
    try:
        in_batch = await victim.wait_mid_batch(redis_client)
        victim.proc.send_signal(signal.SIGKILL)
        assert await victim.wait_exit() == -signal.SIGKILL
    finally:
        victim.kill()
    assert in_batch == ids
    rows = await pending_rows(redis_client, names.ingest, GROUP)
    assert {(r["message_id"], r["consumer"]) for r in rows} == {(i, "victim") for i in ids}
    later = await produce(redis_client, names.ingest, 2, start=6)

    rec = await run_survivor_until_all_acked(redis_client, names, fast_settings, set(ids + later))

    assert await acked_counts(redis_client, names, "victim") == {}
    assert await acked_counts(redis_client, names, "survivor") == {i: 1 for i in ids + later}
    assert rec.counts == {i: 1 for i in ids + later}
    assert {rec.attempts(i)[0] for i in ids} == {2}  # reclaimed: second delivery
    assert {rec.attempts(i)[0] for i in later} == {1}
    assert await redis_client.xlen(names.dlq) == 0
    assert await pending_count(redis_client, names.ingest, GROUP) == 0


async def test_sigterm_finishes_the_in_flight_batch_and_exits_zero(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    await StreamConsumer(redis_client, names, names.ingest, GROUP, "x").ensure_group()
    ids = await produce(redis_client, names.ingest, 9)
    victim = await ConsumerProcess.start(
        REDIS_URL, names, "victim",
        "--sleep", "1.0", "--batch-size", "3", "--drain-timeout", "20",
        "--visibility-ms", str(VISIBILITY_MS),
    )  # fmt: skip
    in_batch, rc, out = await victim.sigterm_mid_batch(redis_client)
    assert rc == 0, out
    assert in_batch == ids[:3]
    started = await victim.started_ids(redis_client)
    victim_acked = await acked_counts(redis_client, names, "victim")
    # the in-flight batch was finished, and no batch was started after SIGTERM
    assert started == ids[:3]
    assert victim_acked == {i: 1 for i in ids[:3]}
    assert await pending_count(redis_client, names.ingest, GROUP) == 0

    rec = await run_survivor_until_all_acked(
        redis_client, names, fast_settings, set(ids), already_acked=set(victim_acked)
    )
    assert rec.counts == {i: 1 for i in ids[3:]}


async def test_sigterm_past_drain_timeout_hands_entries_back_and_exits_zero(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    await StreamConsumer(redis_client, names, names.ingest, GROUP, "x").ensure_group()
    ids = await produce(redis_client, names.ingest, 8)
    victim = await ConsumerProcess.start(
        REDIS_URL, names, "victim",
        "--sleep", "120", "--batch-size", "5", "--drain-timeout", "0.3",
        "--visibility-ms", str(VISIBILITY_MS),
    )  # fmt: skip
    in_batch, rc, out = await victim.sigterm_mid_batch(redis_client)
    assert rc == 0, out
    assert in_batch == ids[:5]
    assert await acked_counts(redis_client, names, "victim") == {}
    rows = await pending_rows(redis_client, names.ingest, GROUP)
    assert sorted(r["message_id"] for r in rows) == ids[:5]
    # handed back: idle already at least the visibility timeout, so reclaimable at once
    assert all(r["consumer"] == "victim" and r["idle"] >= VISIBILITY_MS for r in rows)

    rec = await run_survivor_until_all_acked(redis_client, names, fast_settings, set(ids))
    assert rec.counts == {i: 1 for i in ids}
    assert await acked_counts(redis_client, names, "survivor") == {i: 1 for i in ids}
