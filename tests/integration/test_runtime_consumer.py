"""The consumer runtime on the real Redis: groups, outcomes, poison, the delivery cap,
dead-letter hooks, burst mode, restart under a stable name, leases, reaping, trimming.

Every test runs twice: on the single Redis and on a real local Redis Cluster (three
primaries, one replica each; ``redis_cluster`` in tests/conftest.py), where every key
carries the deployment's hash tag. Every test uses its own key prefix."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as redis

from embedstream.config import ConsumerSettings
from embedstream.errors import GroupMissingError, PermanentError, PoisonMessage, RetryableError
from embedstream.schemas.envelope import Envelope, Fields
from embedstream.streams.consumer import RawEntry, StreamConsumer
from embedstream.streams.messages import (
    Ack,
    DeadLetter,
    Message,
    Outcome,
    Publish,
    Retry,
    TransactionOp,
)
from embedstream.streams.names import StreamNames
from embedstream.streams.runner import StreamWorker
from tests.conftest import REDIS_BACKENDS
from tests.support.redis_cluster import sync_client
from tests.support.streams import (
    Item,
    Recorder,
    acked_counts,
    consumer_names,
    dlq_entries,
    pending_count,
    pending_rows,
    produce,
    settings,
    wait_until,
)

pytestmark = pytest.mark.integration

GROUP = "g"


@pytest.fixture(params=REDIS_BACKENDS)
def redis_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def worker(
    client: redis.Redis,
    names: StreamNames,
    handler: Any,
    cfg: ConsumerSettings,
    **kwargs: Any,
) -> StreamWorker[Envelope]:
    return StreamWorker(client, names, names.ingest, GROUP, handler, cfg, **kwargs)


async def stop_after(task: asyncio.Task[Any], stop: asyncio.Event) -> Any:
    stop.set()
    return await asyncio.wait_for(task, 15)


# -- 1. groups ----------------------------------------------------------------------


async def test_group_creation_is_idempotent_and_creates_the_stream(
    redis_client: redis.Redis, names: StreamNames
) -> None:
    consumer = StreamConsumer(redis_client, names, names.ingest, GROUP, "c1")
    assert await redis_client.exists(names.ingest) == 0

    assert await consumer.ensure_group() is True
    assert await consumer.ensure_group() is False

    assert await redis_client.exists(names.ingest) == 1  # MKSTREAM
    assert await redis_client.xlen(names.ingest) == 0
    groups = await redis_client.xinfo_groups(names.ingest)
    assert [g["name"] for g in groups] == [GROUP.encode()]


async def test_worker_creates_its_group_and_run_twice_is_fine(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    ids = await produce(redis_client, names.ingest, 3)
    rec = Recorder(names, "c1")
    await worker(redis_client, names, rec, fast_settings).run(burst=True)
    await worker(redis_client, names, rec, fast_settings).run(burst=True)
    assert sorted(rec.counts) == sorted(ids)
    assert set(rec.counts.values()) == {1}
    assert len(await redis_client.xinfo_groups(names.ingest)) == 1


@pytest.mark.parametrize("stream_exists", [False, True])
async def test_missing_group_raises_typed_error_without_create_group(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    stream_exists: bool,
) -> None:
    if stream_exists:
        await produce(redis_client, names.ingest, 1)
    rec = Recorder(names, "c1")
    w = worker(redis_client, names, rec, fast_settings, create_group=False)
    with pytest.raises(GroupMissingError) as info:
        await asyncio.wait_for(w.run(burst=True), 10)
    assert info.value.stream == names.ingest
    assert info.value.group == GROUP
    assert rec.deliveries == []
    # nothing was created behind our back
    if stream_exists:
        assert await redis_client.xinfo_groups(names.ingest) == []
    else:
        assert await redis_client.exists(names.ingest) == 0


async def test_missing_group_raises_in_continuous_mode_too(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    w = worker(redis_client, names, Recorder(names, "c1"), fast_settings, create_group=False)
    with pytest.raises(GroupMissingError):
        await asyncio.wait_for(w.run(asyncio.Event()), 10)


# -- 3. poison ----------------------------------------------------------------------


async def test_poison_entry_mid_batch_is_dead_lettered_and_neighbours_acked(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    before = await produce(redis_client, names.ingest, 2)
    poison_fields = {"garbage": b"\xff\xfe", "type": "nope"}
    poison_id = (await redis_client.xadd(names.ingest, poison_fields)).decode()  # type: ignore
    after = await produce(redis_client, names.ingest, 2, start=2)
    rec = Recorder(names, "c1")

    stats = await worker(redis_client, names, rec, fast_settings, stage="embed").run(burst=True)

    assert len(rec.batches) == 1  # the poison entry was part of one batch of five
    assert sorted(rec.counts) == sorted(before + after)  # handler never saw the poison
    assert await acked_counts(redis_client, names, "c1") == {i: 1 for i in before + after}
    assert await pending_count(redis_client, names.ingest, GROUP) == 0

    dlq = await redis_client.xrange(names.dlq)
    assert len(dlq) == 1
    fields = dlq[0][1]
    assert fields[b"garbage"] == b"\xff\xfe"  # original bytes kept as they were
    assert fields[b"type"] == b"nope"
    assert fields[b"dlq_stage"] == b"embed"
    assert fields[b"dlq_id"] == poison_id.encode()
    assert fields[b"dlq_stream"] == names.ingest.encode()
    assert fields[b"dlq_group"] == GROUP.encode()
    assert fields[b"dlq_attempts"] == b"1"
    assert fields[b"dlq_error_type"] == b"PoisonMessage"
    assert b"undecodable" in fields[b"dlq_error"]
    assert await redis_client.hget(names.dlq_counts, f"{names.ingest}|{GROUP}") == b"1"
    assert (stats.acked, stats.dead_lettered) == (4, 1)


# -- 4. per-message outcomes --------------------------------------------------------


async def test_retry_and_dead_letter_do_not_affect_other_messages(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    ids = await produce(redis_client, names.ingest, 5)
    retry_id, dead_id = ids[1], ids[3]

    def decide(m: Message[Envelope]) -> Outcome | None:
        if m.id == retry_id and m.attempt == 1:
            return Retry(RetryableError("flaky"))
        if m.id == dead_id:
            return DeadLetter(PermanentError("bad doc"), extra={"reason": "test"})
        n = m.body.payload(Item).n
        return Ack(publish=[Publish(names.results, {"n": str(n), "src": m.id})])

    rec = Recorder(names, "c1", decide)
    stats = await worker(redis_client, names, rec, fast_settings).run(burst=True)

    assert rec.batches[0] == ids  # all five came in one batch
    assert rec.attempts(retry_id) == [1, 2]
    for entry_id in (ids[0], ids[2], ids[4], dead_id):
        assert rec.attempts(entry_id) == [1]
    results = await redis_client.xrange(names.results)
    assert sorted(f[b"src"].decode() for _, f in results) == sorted(
        [ids[0], ids[2], ids[4], retry_id]
    )
    dlq = await dlq_entries(redis_client, names)
    summary = [(d["dlq_id"], d["dlq_error_type"], d["dlq_attempts"], d["dlq_reason"]) for d in dlq]
    assert summary == [(dead_id, "PermanentError", "1", "test")]
    assert await pending_count(redis_client, names.ingest, GROUP) == 0
    assert (stats.acked, stats.retried, stats.dead_lettered) == (4, 1, 1)


async def test_exception_for_the_whole_batch_retries_then_acks(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    ids = await produce(redis_client, names.ingest, 3)
    rec = Recorder(names, "c1")
    failed: list[str] = []

    async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        if not failed:
            failed.extend(m.id for m in messages)
            raise ConnectionResetError("downstream hiccup")
        return await rec(messages)

    await worker(redis_client, names, handler, fast_settings).run(burst=True)

    assert failed == ids  # the first batch raised as a whole
    # every message was delivered again (attempt 2) and acked once
    assert {i: rec.attempts(i) for i in ids} == {i: [2] for i in ids}
    assert await acked_counts(redis_client, names, "c1") == {i: 1 for i in ids}
    assert await pending_count(redis_client, names.ingest, GROUP) == 0
    assert await redis_client.xlen(names.dlq) == 0


# -- 5. delivery cap ----------------------------------------------------------------


async def test_always_retryable_is_delivered_max_deliveries_times_then_dead_lettered(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    ids = await produce(redis_client, names.ingest, 3)
    bad = ids[1]

    async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        rec.deliveries.extend((m.id, m.attempt) for m in messages)
        return [Retry(RetryableError("still down")) if m.id == bad else Ack() for m in messages]

    rec = Recorder(names, "c1")
    cfg = settings("c1", fast_settings, max_deliveries=4)
    await worker(redis_client, names, handler, cfg).run(burst=True)

    assert rec.attempts(bad) == [1, 2, 3, 4]
    assert rec.attempts(ids[0]) == rec.attempts(ids[2]) == [1]
    dlq = await dlq_entries(redis_client, names)
    assert len(dlq) == 1
    assert dlq[0]["dlq_id"] == bad
    assert dlq[0]["dlq_attempts"] == "4"
    assert dlq[0]["dlq_error_type"] == "RetryableError"
    assert dlq[0]["dlq_error"] == "still down"
    assert await pending_count(redis_client, names.ingest, GROUP) == 0


async def test_entry_claimed_beyond_the_cap_is_dead_lettered_without_handling(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    """Consumers that crashed with an entry max_deliveries times: the next claim takes it
    past the cap and it goes to the DLQ with DeliveryLimitExceeded."""
    cfg = settings("survivor", fast_settings, max_deliveries=3)
    await StreamConsumer(redis_client, names, names.ingest, GROUP, "x").ensure_group()
    ids = await produce(redis_client, names.ingest, 2)
    await redis_client.xreadgroup(GROUP, "crashed", {names.ingest: ">"}, count=10)
    # two more crashed deliveries of ids[0]; ids[1] was delivered only once
    await redis_client.xclaim(
        names.ingest, GROUP, "crashed", 0, [ids[0]], idle=60_000, retrycount=3
    )
    await redis_client.xclaim(names.ingest, GROUP, "crashed", 0, [ids[1]], idle=60_000)
    rows = {
        r["message_id"]: r["times_delivered"]
        for r in await pending_rows(redis_client, names.ingest, GROUP)
    }
    assert rows == {ids[0]: 3, ids[1]: 2}

    [(_, original)] = await redis_client.xrange(names.ingest, ids[0], ids[0])
    rec = Recorder(names, "survivor")
    await worker(redis_client, names, rec, cfg).run(burst=True)

    assert rec.deliveries == [(ids[1], 3)]  # within the cap: handled on its 3rd delivery
    dlq = await redis_client.xrange(names.dlq)
    assert len(dlq) == 1
    fields = dlq[0][1]
    assert fields[b"dlq_id"] == ids[0].encode()
    assert fields[b"dlq_error_type"] == b"DeliveryLimitExceeded"
    assert fields[b"dlq_attempts"] == b"3"
    assert {k: fields[k] for k in original} == original  # the original entry travels with it
    assert await pending_count(redis_client, names.ingest, GROUP) == 0


# -- 11. dead_letter_ops ------------------------------------------------------------


async def test_dead_letter_ops_run_in_the_dead_letter_transaction(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    jobs = names.key("jobs")
    ids = await produce(redis_client, names.ingest, 4)
    poison_id = (await redis_client.xadd(names.ingest, {"junk": "1"})).decode()
    seen: list[tuple[Fields, BaseException]] = []

    def ops(fields: Fields, error: BaseException) -> Sequence[TransactionOp]:
        seen.append((fields, error))
        try:
            key = Envelope.from_fields(fields).subject or "no-subject"
        except PoisonMessage:
            key = "poison"
        return [lambda pipe: pipe.hset(jobs, key, type(error).__name__)]

    def decide(m: Message[Envelope]) -> Outcome | None:
        return DeadLetter(PermanentError("no")) if m.id == ids[2] else None

    rec = Recorder(names, "c1", decide)
    await worker(redis_client, names, rec, fast_settings, dead_letter_ops=ops).run(burst=True)

    dlq = await dlq_entries(redis_client, names)
    assert sorted(d["dlq_id"] for d in dlq) == sorted([ids[2], poison_id])
    assert await redis_client.hgetall(jobs) == {
        b"doc-2": b"PermanentError",
        b"poison": b"PoisonMessage",
    }
    assert len(seen) == 2
    assert await acked_counts(redis_client, names, "c1") == {ids[0]: 1, ids[1]: 1, ids[3]: 1}


async def test_aborted_dead_letter_transaction_writes_neither_and_is_redelivered(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    redis_url: str,
) -> None:
    """The first dead-letter transaction is aborted (a queued command is invalid): no DLQ
    entry, no hook write, no ack. The entry is redelivered and the second attempt writes
    both together."""
    jobs = names.key("jobs")
    [entry_id] = await produce(redis_client, names.ingest, 1)
    calls = 0
    state_at_second_call: tuple[int, bool, int] | None = None
    sync = sync_client(redis_url)

    def ops(fields: Fields, error: BaseException) -> Sequence[TransactionOp]:
        nonlocal calls, state_at_second_call
        calls += 1
        if calls == 1:
            # wrong arity: refused when queued, so EXEC aborts the whole transaction
            return [lambda pipe: pipe.execute_command("HSET", jobs)]
        state_at_second_call = (
            sync.xlen(names.dlq),  # type: ignore[arg-type]
            bool(sync.hexists(jobs, entry_id)),
            len(sync.xpending_range(names.ingest, GROUP, "-", "+", 10)),  # type: ignore[arg-type]
        )
        return [lambda pipe: pipe.hset(jobs, entry_id, "dead")]

    async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        return [DeadLetter(PermanentError("no")) for _ in messages]

    try:
        await asyncio.wait_for(
            worker(redis_client, names, handler, fast_settings, dead_letter_ops=ops).run(
                burst=True
            ),
            30,
        )
    finally:
        sync.close()
    assert calls == 2
    assert state_at_second_call == (0, False, 1)
    assert await redis_client.xlen(names.dlq) == 1
    assert await redis_client.hget(jobs, entry_id) == b"dead"
    assert await pending_count(redis_client, names.ingest, GROUP) == 0


# -- 12. burst ----------------------------------------------------------------------


async def test_burst_returns_when_everything_including_retries_is_done(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    ids = await produce(redis_client, names.ingest, 25)
    flaky = set(ids[::5])
    blocks: list[int | None] = []

    def decide(m: Message[Envelope]) -> Outcome | None:
        if m.id in flaky and m.attempt < 3:
            return Retry(RetryableError("later"))
        return None

    rec = Recorder(names, "c1", decide)
    cfg = settings("c1", fast_settings, retry_backoff_ms=50, block_ms=5_000)
    runner = worker(redis_client, names, rec, cfg)
    original = runner.consumer.read_new

    async def spy(count: int, block_ms: int | None) -> list[RawEntry]:
        blocks.append(block_ms)
        return await original(count, block_ms)

    runner.consumer.read_new = spy  # type: ignore[method-assign]
    stats = await asyncio.wait_for(runner.run(burst=True), 30)

    assert await acked_counts(redis_client, names, "c1") == {i: 1 for i in ids}
    for entry_id in flaky:
        assert rec.attempts(entry_id) == [1, 2, 3]
    assert await pending_count(redis_client, names.ingest, GROUP) == 0
    assert (stats.acked, stats.retried, stats.dead_lettered) == (25, 10, 0)
    assert blocks
    assert set(blocks) == {None}  # burst mode never blocks


async def test_burst_with_nothing_to_do_returns(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    rec = Recorder(names, "c1")
    stats = await asyncio.wait_for(
        worker(redis_client, names, rec, fast_settings).run(burst=True), 10
    )
    assert stats.batches == 0
    assert rec.deliveries == []


# -- restart under a stable consumer name --------------------------------------------


async def test_restart_with_same_name_takes_back_own_pending_once(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    """A process restarted under the same consumer name finds its own pending entries
    first; each is handled once, even with several batches in flight."""
    await StreamConsumer(redis_client, names, names.ingest, GROUP, "x").ensure_group()
    ids = await produce(redis_client, names.ingest, 9)
    await redis_client.xreadgroup(GROUP, "c1", {names.ingest: ">"}, count=9)  # then "crash"
    more = await produce(redis_client, names.ingest, 3, start=9)

    rec = Recorder(names, "c1", delay=0.2)
    cfg = settings("c1", fast_settings, batch_size=2, max_in_flight=3)
    await asyncio.wait_for(worker(redis_client, names, rec, cfg).run(burst=True), 30)

    assert rec.counts == {i: 1 for i in ids + more}
    assert {rec.attempts(i)[0] for i in ids} == {2}
    assert await redis_client.xlen(names.dlq) == 0
    assert await pending_count(redis_client, names.ingest, GROUP) == 0


# -- stop -----------------------------------------------------------------------------


async def test_stop_finishes_in_flight_batches_and_reads_nothing_new(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    ids = await produce(redis_client, names.ingest, 6)
    rec = Recorder(names, "c1", delay=0.5)
    cfg = settings("c1", fast_settings, batch_size=2, max_in_flight=1, drain_timeout_s=10)
    stop = asyncio.Event()
    task = asyncio.create_task(worker(redis_client, names, rec, cfg).run(stop))
    await asyncio.wait_for(rec.started.wait(), 10)
    stats = await stop_after(task, stop)

    assert rec.batches == [ids[:2]]
    assert await acked_counts(redis_client, names, "c1") == {ids[0]: 1, ids[1]: 1}
    assert stats.acked == 2
    # nothing else was taken from the stream: no pending entries, the rest unread
    assert await pending_count(redis_client, names.ingest, GROUP) == 0
    group = (await redis_client.xinfo_groups(names.ingest))[0]
    assert group["last-delivered-id"].decode() == ids[1]


async def test_drain_timeout_hands_unfinished_entries_back(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    ids = await produce(redis_client, names.ingest, 3)
    rec = Recorder(names, "c1", delay=60)
    # one slot, busy: stop must still start the drain window at once
    cfg = settings("c1", fast_settings, drain_timeout_s=0.2, max_in_flight=1)
    stop = asyncio.Event()
    task = asyncio.create_task(worker(redis_client, names, rec, cfg).run(stop))
    await asyncio.wait_for(rec.started.wait(), 10)
    stats = await stop_after(task, stop)

    assert stats.acked == 0
    rows = await pending_rows(redis_client, names.ingest, GROUP)
    assert sorted(r["message_id"] for r in rows) == ids
    # handed back: idle already past the visibility timeout, reclaimable at once
    assert all(r["idle"] >= cfg.visibility_timeout_ms for r in rows)

    rec2 = Recorder(names, "c2")
    await worker(redis_client, names, rec2, settings("c2", fast_settings)).run(burst=True)
    assert rec2.counts == {i: 1 for i in ids}
    assert await pending_count(redis_client, names.ingest, GROUP) == 0


async def test_drain_ends_a_handler_busy_with_redis_calls(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    """A handler that keeps calling Redis: with redis-py's default socket_timeout a
    cancellation landing in a call is often lost on Python 3.11 (the handler carries on),
    so one cancel() is not enough. The drain must still end the batch and hand its
    entries back."""
    ids = await produce(redis_client, names.ingest, 3)
    started = asyncio.Event()
    calls = 0

    async def busy(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        nonlocal calls
        started.set()
        while True:  # keeps working in small steps, each a Redis call
            await redis_client.ping()
            calls += 1
            await asyncio.sleep(0.005)

    cfg = settings("c1", fast_settings, drain_timeout_s=0.2, max_in_flight=1)
    stop = asyncio.Event()
    task = asyncio.create_task(worker(redis_client, names, busy, cfg).run(stop))
    await asyncio.wait_for(started.wait(), 10)
    stats = await stop_after(task, stop)

    assert stats.acked == 0
    assert calls > 0
    rows = await pending_rows(redis_client, names.ingest, GROUP)
    assert sorted(r["message_id"] for r in rows) == ids
    assert all(r["idle"] >= cfg.visibility_timeout_ms for r in rows)


async def test_drain_timeout_during_the_ack_write_still_completes_the_write(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    """The drain window ends while a handled batch is writing its acks: the write is
    finished before ``run`` returns, so the batch is not handled a second time."""
    ids = await produce(redis_client, names.ingest, 3)
    rec = Recorder(names, "c1")
    cfg = settings("c1", fast_settings, drain_timeout_s=0.1)
    w = worker(redis_client, names, rec, cfg)
    finish = w.consumer.finish
    writing = asyncio.Event()

    async def slow_finish(*args: Any, **kwargs: Any) -> None:
        writing.set()
        await asyncio.sleep(0.5)
        await finish(*args, **kwargs)

    w.consumer.finish = slow_finish  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await asyncio.wait_for(writing.wait(), 10)
    await stop_after(task, stop)

    assert await acked_counts(redis_client, names, "c1") == {i: 1 for i in ids}
    assert await pending_count(redis_client, names.ingest, GROUP) == 0


# -- 9. lease renewal -----------------------------------------------------------------


async def test_lease_renewal_keeps_long_batches_from_being_stolen(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    vis = 600
    ids = await produce(redis_client, names.ingest, 4)
    slow = Recorder(names, "slow", delay=3 * vis / 1000)
    thief = Recorder(names, "thief")
    stop = asyncio.Event()
    slow_task = asyncio.create_task(
        worker(
            redis_client, names, slow, settings("slow", fast_settings, visibility_timeout_ms=vis)
        ).run(stop)
    )
    await asyncio.wait_for(slow.started.wait(), 10)
    thief_task = asyncio.create_task(
        worker(
            redis_client,
            names,
            thief,
            settings("thief", fast_settings, visibility_timeout_ms=vis, claim_interval_ms=20),
        ).run(stop)
    )

    async def all_acked() -> bool:
        return len(await acked_counts(redis_client, names, "slow")) == len(ids)

    await wait_until(all_acked, within=20, what="the slow consumer to ack its batch")
    await stop_after(slow_task, stop)
    await asyncio.wait_for(thief_task, 15)

    assert slow.counts == {i: 1 for i in ids}
    assert thief.deliveries == []
    assert await acked_counts(redis_client, names, "thief") == {}
    assert await pending_count(redis_client, names.ingest, GROUP) == 0


async def test_poison_waiting_for_its_slow_batch_is_not_stolen_and_dead_lettered_twice(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    """An undecodable entry is dead-lettered with the rest of its batch, after the
    handler: the lease covers it meanwhile, so another consumer does not reclaim it and
    write a second dead letter (the chaos test of issue 9 saw one)."""
    vis = 600
    ids = await produce(redis_client, names.ingest, 2)
    poison = (await redis_client.xadd(names.ingest, {"ce": "not json", "data": "{}"})).decode()  # type: ignore[arg-type]
    slow = Recorder(names, "slow", delay=3 * vis / 1000)
    thief = Recorder(names, "thief")
    stop = asyncio.Event()
    slow_task = asyncio.create_task(
        worker(
            redis_client, names, slow, settings("slow", fast_settings, visibility_timeout_ms=vis)
        ).run(stop)
    )
    await asyncio.wait_for(slow.started.wait(), 10)
    thief_task = asyncio.create_task(
        worker(
            redis_client,
            names,
            thief,
            settings("thief", fast_settings, visibility_timeout_ms=vis, claim_interval_ms=20),
        ).run(stop)
    )

    async def all_acked() -> bool:
        return len(await acked_counts(redis_client, names, "slow")) == len(ids)

    await wait_until(all_acked, within=20, what="the slow consumer to ack its batch")
    await stop_after(slow_task, stop)
    await asyncio.wait_for(thief_task, 15)

    letters = await dlq_entries(redis_client, names)
    assert [(d["dlq_id"], d["dlq_consumer"]) for d in letters] == [(poison, "slow")]
    assert await pending_count(redis_client, names.ingest, GROUP) == 0


# -- 10. reaping ----------------------------------------------------------------------


async def test_housekeeping_reaps_idle_consumers_and_their_entries_are_processed(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    cfg = settings("live", fast_settings, consumer_idle_reap_ms=1_000)
    await StreamConsumer(redis_client, names, names.ingest, GROUP, "x").ensure_group()
    ids = await produce(redis_client, names.ingest, 3)
    await redis_client.xreadgroup(GROUP, "dead", {names.ingest: ">"}, count=3)
    await redis_client.xclaim(names.ingest, GROUP, "dead", 0, [ids[0]], retrycount=2)

    async def dead_is_idle() -> bool:
        rows = await redis_client.xinfo_consumers(names.ingest, GROUP)
        return any(r["name"] == b"dead" and r["idle"] > 1_200 for r in rows)

    await wait_until(dead_is_idle, within=10, what="the dead consumer to idle")
    fresh = await produce(redis_client, names.ingest, 1, start=3)
    await redis_client.xreadgroup(GROUP, "busy", {names.ingest: ">"}, count=1)

    rec = Recorder(names, "live")
    w = worker(redis_client, names, rec, cfg)
    await w._housekeep_once()

    assert await consumer_names(redis_client, names.ingest, GROUP) == {"live", "busy"}
    rows = {r["message_id"]: r for r in await pending_rows(redis_client, names.ingest, GROUP)}
    assert {i: (rows[i]["consumer"], rows[i]["times_delivered"]) for i in ids} == {
        ids[0]: ("live", 2),  # delivery counts kept
        ids[1]: ("live", 1),
        ids[2]: ("live", 1),
    }
    assert rows[fresh[0]]["consumer"] == "busy"  # not idle long enough: left alone

    await asyncio.wait_for(w.run(burst=True), 20)
    assert sorted(rec.counts) == sorted(ids)
    assert rec.attempts(ids[0]) == [3]
    assert rec.attempts(ids[1]) == [2]
    assert await acked_counts(redis_client, names, "live") == {i: 1 for i in ids}
    assert [r["message_id"] for r in await pending_rows(redis_client, names.ingest, GROUP)] == fresh


# -- 7. trimming ----------------------------------------------------------------------


async def test_trim_keeps_what_a_slow_group_has_not_acked(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    stream = names.ingest
    ids = await produce(redis_client, stream, 10)
    await StreamConsumer(redis_client, names, stream, "slow", "s").ensure_group()
    fast_worker = worker(redis_client, names, Recorder(names, "c1"), fast_settings)
    slow = StreamConsumer(redis_client, names, stream, "slow", "s")

    # the fast group acks everything (its burst run trims at the end); slow read nothing
    await fast_worker.run(burst=True)
    assert await pending_count(redis_client, stream, GROUP) == 0
    assert await redis_client.xlen(stream) == 10

    # slow reads five, acks 0, 1 and 3: entry 2 is its oldest pending
    await redis_client.xreadgroup("slow", "s", {stream: ">"}, count=5)
    await redis_client.xack(stream, "slow", ids[0], ids[1], ids[3])
    assert await slow.trim_acked() == 2
    assert [i.decode() for i, _ in await redis_client.xrange(stream)] == ids[2:]

    # slow acks the rest of what it read: everything up to its last-delivered id goes
    await redis_client.xack(stream, "slow", ids[2], ids[4])
    assert await fast_worker.consumer.trim_acked() == 3
    assert [i.decode() for i, _ in await redis_client.xrange(stream)] == ids[5:]

    # both done
    await redis_client.xreadgroup("slow", "s", {stream: ">"}, count=100)
    await redis_client.xack(stream, "slow", *ids[5:])
    assert await slow.trim_acked() == 5
    assert await redis_client.xlen(stream) == 0


HOUR_MS = 3_600_000


async def add_aged(client: redis.Redis, stream: str, ages_ms: Sequence[int]) -> list[str]:
    """One entry per age (oldest first), with ids that date it that long ago."""
    now_ms = int(time.time() * 1000)
    ids = []
    for seq, age in enumerate(ages_ms):
        ids.append(f"{now_ms - age}-{seq}")
        await client.xadd(stream, {"n": str(seq)}, id=ids[-1])
    return ids


async def test_retention_trims_only_entries_older_than_it_that_every_group_acked(
    redis_client: redis.Redis, names: StreamNames
) -> None:
    stream = names.results
    ids = await add_aged(redis_client, stream, [3 * HOUR_MS] * 4 + [60_000] * 3)
    sub = StreamConsumer(redis_client, names, stream, "downstream", "d1", start_id="0")
    await sub.ensure_group()
    # the subscriber read and acked the first two old entries; the third is pending
    await redis_client.xreadgroup("downstream", "d1", {stream: ">"}, count=3)
    await redis_client.xack(stream, "downstream", ids[0], ids[1])

    assert await sub.trim_acked(stream, retain_ms=HOUR_MS) == 2
    assert [i.decode() for i, _ in await redis_client.xrange(stream)] == ids[2:]

    # everything read and acked: the old entries go, the recent ones stay (retention)
    await redis_client.xreadgroup("downstream", "d1", {stream: ">"}, count=100)
    await redis_client.xack(stream, "downstream", *ids[2:])
    assert await sub.trim_acked(stream, retain_ms=HOUR_MS) == 2
    assert [i.decode() for i, _ in await redis_client.xrange(stream)] == ids[4:]


async def test_retention_on_a_stream_without_groups_trims_by_age_alone(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    ids = await add_aged(redis_client, names.results, [5 * HOUR_MS, 2 * HOUR_MS, 1_000])
    plain = StreamConsumer(redis_client, names, names.ingest, GROUP, "c1")
    await plain.ensure_group()
    # without a retention, a stream nobody reads is left alone
    assert await plain.trim_acked(names.results) == 0
    assert await redis_client.xlen(names.results) == 3

    # a worker retaining it trims in its housekeeping (the burst run's included)
    keeper = worker(
        redis_client,
        names,
        Recorder(names, "c1"),
        fast_settings,
        retain={names.results: 3 * HOUR_MS},
    )
    await keeper.run(burst=True)
    assert [i.decode() for i, _ in await redis_client.xrange(names.results)] == ids[1:]


async def test_trim_keeps_entries_the_worker_group_still_has_pending(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    stream = names.ingest
    ids = await produce(redis_client, stream, 6)
    slow = StreamConsumer(redis_client, names, stream, "slow", "s")
    await slow.ensure_group()
    await redis_client.xreadgroup("slow", "s", {stream: ">"}, count=100)
    await redis_client.xack(stream, "slow", *ids)

    main = StreamConsumer(redis_client, names, stream, GROUP, "c1")
    await main.ensure_group()
    await redis_client.xreadgroup(GROUP, "c1", {stream: ">"}, count=100)
    await redis_client.xack(stream, GROUP, ids[0], ids[1], ids[2], ids[4], ids[5])
    assert await slow.trim_acked() == 3  # ids[3] is still pending in the worker group
    assert [i.decode() for i, _ in await redis_client.xrange(stream)] == ids[3:]
    assert await pending_count(redis_client, stream, GROUP) == 1


async def test_housekeeping_trims_in_a_running_worker(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    stream = names.ingest
    ids = await produce(redis_client, stream, 8)
    cfg = settings("c1", fast_settings, claim_interval_ms=50)
    slow = StreamConsumer(redis_client, names, stream, "slow", "s")
    await slow.ensure_group()
    rec = Recorder(names, "c1")
    stop = asyncio.Event()
    task = asyncio.create_task(worker(redis_client, names, rec, cfg).run(stop))

    async def all_acked() -> bool:
        return len(await acked_counts(redis_client, names, "c1")) == 8

    await wait_until(all_acked, what="the worker to ack everything")
    await redis_client.xreadgroup("slow", "s", {stream: ">"}, count=3)
    await redis_client.xack(stream, "slow", *ids[:3])

    async def trimmed() -> bool:
        return int(await redis_client.xlen(stream)) == 5

    await wait_until(trimmed, what="housekeeping to trim the three acked by both groups")
    await stop_after(task, stop)
    assert [i.decode() for i, _ in await redis_client.xrange(stream)] == ids[3:]
