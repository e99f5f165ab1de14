"""Fast, in-memory tests (fakeredis) of the runtime's non-blocking logic: sorting
outcomes, poison, the delivery cap, handler contract violations, burst mode without
BLOCK. fakeredis has no Lua here, so the Lua-backed operations are replaced by
recorders where a test reaches them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fakeredis
import pytest

from embedstream.config import ConsumerSettings
from embedstream.errors import PermanentError, PoisonMessage, RetryableError
from embedstream.schemas.envelope import Envelope
from embedstream.streams.consumer import Dead, RawEntry, StreamConsumer, split_outcomes
from embedstream.streams.messages import (
    Ack,
    DeadLetter,
    Message,
    Outcome,
    Publish,
    Retry,
    outcome_for,
)
from embedstream.streams.names import StreamNames
from embedstream.streams.runner import StreamWorker
from tests.support.streams import produce

GROUP = "g"


@pytest.fixture
def client() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


@pytest.fixture
def cfg() -> ConsumerSettings:
    return ConsumerSettings(
        consumer_name="c1",
        batch_size=10,
        block_ms=5_000,
        visibility_timeout_ms=1_000,
        max_deliveries=3,
        retry_backoff_ms=100,
        retry_backoff_max_ms=400,
    )


class Handler:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[list[str]] = []

    async def __call__(self, messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        self.calls.append([m.id for m in messages])
        if isinstance(self.answer, BaseException):
            raise self.answer
        result: Sequence[Outcome] = self.answer(messages)
        return result


def make_worker(
    client: Any, names: StreamNames, handler: Any, cfg: ConsumerSettings
) -> tuple[StreamWorker[Envelope], list[tuple[list[str], int]]]:
    """A worker whose Lua-backed ``set_idle`` records its calls instead."""
    w: StreamWorker[Envelope] = StreamWorker(client, names, names.ingest, GROUP, handler, cfg)
    idle_calls: list[tuple[list[str], int]] = []

    async def set_idle(entry_ids: Sequence[str], idle_ms: int) -> int:
        idle_calls.append((list(entry_ids), idle_ms))
        return len(entry_ids)

    w.consumer.set_idle = set_idle  # type: ignore[method-assign]
    return w, idle_calls


async def read_batch(client: Any, names: StreamNames) -> list[RawEntry]:
    consumer = StreamConsumer(client, names, names.ingest, GROUP, "c1")
    await consumer.ensure_group()
    return await consumer.read_new(100, None)


async def pending_ids(client: Any, names: StreamNames) -> list[str]:
    rows = await client.xpending_range(names.ingest, GROUP, "-", "+", 100)
    return [r["message_id"].decode() for r in rows]


# -- pure functions -------------------------------------------------------------------


def test_split_outcomes_sorts_each_message_by_its_outcome() -> None:
    messages = [Message(f"1-{i}", "s", {b"k": str(i).encode()}, i, i + 1) for i in range(4)]
    ack = Ack(publish=[Publish("s", {"a": "b"})])
    err_retry, err_dead = RetryableError("r"), PermanentError("p")
    done, dead, retry = split_outcomes(
        messages, [ack, Retry(err_retry), DeadLetter(err_dead, {"x": "y"}), Ack()]
    )
    assert done == [("1-0", ack), ("1-3", Ack())]
    assert retry == [(messages[1], err_retry)]
    assert dead == [Dead("1-2", {b"k": b"2"}, 3, err_dead, {"x": "y"})]


def test_split_outcomes_refuses_a_count_mismatch() -> None:
    messages = [Message("1-0", "s", {}, None, 1), Message("1-1", "s", {}, None, 1)]
    with pytest.raises(ValueError, match="zip"):
        split_outcomes(messages, [Ack()])


def test_split_outcomes_refuses_what_is_not_an_outcome() -> None:
    with pytest.raises(TypeError, match="not Ack, Retry or DeadLetter"):
        split_outcomes([Message("1-0", "s", {}, None, 1)], [True])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (PermanentError("x"), DeadLetter),
        (PoisonMessage("x"), DeadLetter),
        (RetryableError("x"), Retry),
        (RuntimeError("x"), Retry),
    ],
)
def test_outcome_for_maps_exceptions(error: Exception, kind: type) -> None:
    outcome = outcome_for(error)
    assert isinstance(outcome, kind)
    assert outcome.error is error


def test_dead_letter_fields_keep_the_original_and_replace_old_metadata(
    client: Any,
) -> None:
    consumer = StreamConsumer(client, StreamNames("p"), "p:ingest", GROUP, "c1", stage="embed")
    item = Dead("5-1", {b"data": b"\x00\x01", b"dlq_stage": b"old"}, 2, PoisonMessage("bad"), {})
    fields = consumer.dead_letter_fields(item)
    assert fields[b"data"] == b"\x00\x01"
    assert b"dlq_stage" not in fields
    assert fields["dlq_stage"] == "embed"
    assert fields["dlq_attempts"] == "2"
    assert fields["dlq_error_type"] == "PoisonMessage"
    assert fields["dlq_id"] == "5-1"
    assert fields["dlq_stream"] == "p:ingest"


# -- one batch on fakeredis -----------------------------------------------------------


async def test_poison_goes_to_the_dlq_and_its_neighbours_are_acked(
    client: Any, names: StreamNames, cfg: ConsumerSettings
) -> None:
    await client.xadd(names.ingest, {"placeholder": "x"})  # the stream must exist for groups
    await client.xtrim(names.ingest, maxlen=0)
    good = await produce(client, names.ingest, 1)
    poison = (await client.xadd(names.ingest, {"not": "an envelope"})).decode()
    good += await produce(client, names.ingest, 1, start=1)
    entries = await read_batch(client, names)
    handler = Handler(lambda ms: [Ack() for _ in ms])
    w, idle_calls = make_worker(client, names, handler, cfg)

    await w._process(entries)

    assert handler.calls == [good]
    assert await pending_ids(client, names) == []
    dlq = await client.xrange(names.dlq)
    assert len(dlq) == 1
    assert dlq[0][1][b"not"] == b"an envelope"
    assert dlq[0][1][b"dlq_id"] == poison.encode()
    assert dlq[0][1][b"dlq_error_type"] == b"PoisonMessage"
    assert idle_calls == []


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda ms: [Ack()], id="too-few-outcomes"),
        pytest.param(lambda ms: [Ack() for _ in ms] + [Ack()], id="too-many-outcomes"),
        pytest.param(lambda ms: [None for _ in ms], id="not-outcomes"),
        pytest.param(RetryableError("later"), id="raises-retryable"),
        pytest.param(ValueError("oops"), id="raises-other"),
    ],
)
async def test_broken_or_failing_handler_retries_the_whole_batch(
    client: Any, names: StreamNames, cfg: ConsumerSettings, answer: Any
) -> None:
    ids = await produce(client, names.ingest, 3)
    entries = await read_batch(client, names)
    w, idle_calls = make_worker(client, names, Handler(answer), cfg)

    await w._process(entries)

    assert await pending_ids(client, names) == ids  # nothing acked
    assert await client.xlen(names.dlq) == 0
    # each retry scheduled: idle = visibility - backoff (first attempt: 100 ms)
    assert idle_calls == [(ids, 900)]
    assert w.stats.retried == 3


async def test_permanent_error_for_the_whole_batch_dead_letters_it(
    client: Any, names: StreamNames, cfg: ConsumerSettings
) -> None:
    ids = await produce(client, names.ingest, 2)
    entries = await read_batch(client, names)
    w, _ = make_worker(client, names, Handler(PermanentError("model refuses")), cfg)
    await w._process(entries)
    assert await pending_ids(client, names) == []
    dlq = await client.xrange(names.dlq)
    assert [f[b"dlq_id"].decode() for _, f in dlq] == ids
    assert {f[b"dlq_error"] for _, f in dlq} == {b"model refuses"}


async def test_retry_backoff_grows_and_is_capped(
    client: Any, names: StreamNames, cfg: ConsumerSettings
) -> None:
    ids = await produce(client, names.ingest, 3)
    raw = await read_batch(client, names)
    cfg = cfg.model_copy(update={"max_deliveries": 10})
    # pretend they are on their 1st, 3rd and 5th delivery
    entries = [(i, f, a) for (i, f, _), a in zip(raw, (1, 3, 5), strict=True)]
    w, idle_calls = make_worker(
        client, names, Handler(lambda ms: [Retry(RetryableError("x")) for _ in ms]), cfg
    )
    await w._process(entries)
    # 100 ms, 400 ms, then capped at retry_backoff_max_ms (400)
    assert idle_calls == [([ids[0]], 900), ([ids[1], ids[2]], 600)]


async def test_last_allowed_delivery_dead_letters_instead_of_retrying(
    client: Any, names: StreamNames, cfg: ConsumerSettings
) -> None:
    ids = await produce(client, names.ingest, 2)
    raw = await read_batch(client, names)
    entries = [(raw[0][0], raw[0][1], 3), (raw[1][0], raw[1][1], 4)]  # max_deliveries=3
    handler = Handler(lambda ms: [Retry(RetryableError("again")) for _ in ms])
    w, idle_calls = make_worker(client, names, handler, cfg)
    await w._process(entries)
    assert handler.calls == [[ids[0]]]  # the one past the cap is not handled at all
    assert idle_calls == []
    dlq = {f[b"dlq_id"].decode(): f for _, f in await client.xrange(names.dlq)}
    assert dlq[ids[0]][b"dlq_error_type"] == b"RetryableError"
    assert dlq[ids[0]][b"dlq_attempts"] == b"3"
    assert dlq[ids[1]][b"dlq_error_type"] == b"DeliveryLimitExceeded"
    assert dlq[ids[1]][b"dlq_attempts"] == b"3"
    assert await pending_ids(client, names) == []


# -- the loop in burst mode -------------------------------------------------------------


async def test_burst_reads_without_block_and_returns_when_done(
    client: Any, names: StreamNames, cfg: ConsumerSettings
) -> None:
    ids = await produce(client, names.ingest, 25)
    handler = Handler(lambda ms: [Ack() for _ in ms])
    w, _ = make_worker(client, names, handler, cfg)
    blocks: list[Any] = []
    read_new = w.consumer.read_new

    async def spy_read(count: int, block_ms: int | None) -> list[RawEntry]:
        blocks.append(block_ms)
        return await read_new(count, block_ms)

    async def nothing(*args: Any, **kwargs: Any) -> Any:
        return []

    async def no_claims(*args: Any, **kwargs: Any) -> tuple[str, list[RawEntry]]:
        return "0-0", []

    async def zero() -> int:
        return 0

    w.consumer.read_new = spy_read  # type: ignore[method-assign]
    w.consumer.claim_own = nothing  # type: ignore[method-assign]
    w.consumer.claim_idle = no_claims  # type: ignore[method-assign]
    w.consumer.reap_idle_consumers = nothing  # type: ignore[method-assign]
    w.consumer.trim_acked = zero  # type: ignore[method-assign]

    stats = await w.run(burst=True)

    assert [i for batch in handler.calls for i in batch] == ids
    assert [len(b) for b in handler.calls] == [10, 10, 5]
    assert set(blocks) == {None}
    assert stats.acked == 25
    assert await pending_ids(client, names) == []


@pytest.fixture
def names() -> StreamNames:
    return StreamNames("unit")
