"""What the stream runtime tells about its work on the real Redis: the counters of
``embedstream.metrics.runtime`` (read from prometheus-client's registry) equal what a
run did, and the log lines about one message carry its id, type, tenant, document and
trace id, bound by the runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as redis
import structlog
from prometheus_client import REGISTRY
from structlog.testing import LogCapture

from embedstream.config import ConsumerSettings
from embedstream.errors import PermanentError
from embedstream.logging import get_logger
from embedstream.schemas.envelope import Envelope
from embedstream.streams.messages import Ack, DeadLetter, Message, Outcome, Retry
from embedstream.streams.names import StreamNames
from embedstream.streams.runner import StreamWorker
from tests.support.streams import Item, produce

pytestmark = pytest.mark.integration

GROUP = "g"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _refuse() -> Outcome:
    return DeadLetter(PermanentError("refused"))


def counter(name: str, stage: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, {"stage": stage, "group": GROUP, **labels})
    return value or 0.0


async def test_counters_equal_what_a_run_did(
    redis_client: redis.Redis, names: StreamNames, prefix: str, fast_settings: ConsumerSettings
) -> None:
    stage = f"stage-{prefix}"  # a label value of this test's own
    ids = await produce(redis_client, names.ingest, 12)
    await redis_client.xadd(names.ingest, {"garbage": "no envelope"})  # poison
    retried_once: set[str] = set()

    async def handler(messages: Sequence[Message[Envelope]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for message in messages:
            n = Item.model_validate_json(message.body.data).n
            if n == 0:
                outcomes.append(_refuse())
            elif n == 1 and message.id not in retried_once:
                retried_once.add(message.id)
                outcomes.append(Retry(RuntimeError("try again")))
            else:
                outcomes.append(Ack())
        return outcomes

    worker: StreamWorker[Envelope] = StreamWorker(
        redis_client, names, names.ingest, GROUP, handler, fast_settings, stage=stage
    )
    stats = await asyncio.wait_for(worker.run(burst=True), 30)

    assert (stats.acked, stats.retried, stats.dead_lettered) == (11, 1, 2)
    messages = "embedstream_messages_total"
    assert counter(messages, stage, outcome="acked") == stats.acked
    assert counter(messages, stage, outcome="retried") == stats.retried
    assert counter(messages, stage, outcome="dead_lettered") == stats.dead_lettered
    # every delivery went through a batch: 13 entries, and entry 1 a second time
    assert counter("embedstream_batch_messages_sum", stage) == len(ids) + 1 + 1
    assert counter("embedstream_batch_messages_count", stage) == stats.batches
    assert counter("embedstream_batch_duration_seconds_count", stage) == stats.batches
    assert counter("embedstream_batches_in_flight", stage) == 0


async def test_reclaims_and_lease_renewals_are_counted(
    redis_client: redis.Redis, names: StreamNames, prefix: str, fast_settings: ConsumerSettings
) -> None:
    stage = f"stage-{prefix}"
    await produce(redis_client, names.ingest, 2)
    await redis_client.xgroup_create(names.ingest, GROUP, id="0")
    # a consumer that took both entries and died: they are reclaimed after the timeout
    await redis_client.xreadgroup(GROUP, "crashed", {names.ingest: ">"}, count=2)
    await asyncio.sleep(fast_settings.visibility_timeout_ms / 1000)
    renewals_before = counter("embedstream_lease_renewals_total", stage)

    async def slow(messages: Sequence[Message[Envelope]]) -> list[Outcome]:
        # longer than a renewal interval (a third of the visibility timeout), twice over
        await asyncio.sleep(fast_settings.visibility_timeout_ms / 1000)
        return [Ack() for _ in messages]

    worker: StreamWorker[Envelope] = StreamWorker(
        redis_client, names, names.ingest, GROUP, slow, fast_settings, stage=stage
    )
    stats = await asyncio.wait_for(worker.run(burst=True), 30)
    assert stats.acked == 2
    assert counter("embedstream_messages_reclaimed_total", stage) == 2
    assert counter("embedstream_lease_renewals_total", stage) > renewals_before


async def test_metrics_off_counts_nothing(
    redis_client: redis.Redis, names: StreamNames, prefix: str, fast_settings: ConsumerSettings
) -> None:
    stage = f"stage-{prefix}"
    await produce(redis_client, names.ingest, 3)

    async def ack(messages: Sequence[Message[Envelope]]) -> list[Outcome]:
        return [Ack() for _ in messages]

    worker: StreamWorker[Envelope] = StreamWorker(
        redis_client, names, names.ingest, GROUP, ack, fast_settings, stage=stage, metrics=False
    )
    assert (await asyncio.wait_for(worker.run(burst=True), 30)).acked == 3
    assert (
        REGISTRY.get_sample_value(
            "embedstream_messages_total", {"stage": stage, "group": GROUP, "outcome": "acked"}
        )
        is None
    )


async def test_log_lines_about_a_message_carry_its_context(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    for n, subject in ((1, "doc-ok"), (2, "doc-refused")):
        envelope = Envelope.wrap(
            "test.item.v1",
            Item(n=n),
            source="tests",
            tenant="acme",
            subject=subject,
            traceparent=traceparent,
        )
        await redis_client.xadd(names.ingest, envelope.to_fields())  # type: ignore[arg-type]
    handler_log = get_logger("tests.handler")
    seen: list[dict[str, Any]] = []

    async def handler(messages: Sequence[Message[Envelope]]) -> list[Outcome]:
        (message,) = messages
        seen.append(dict(structlog.contextvars.get_contextvars()))
        handler_log.info("handling")
        if message.body.subject == "doc-refused":
            return [_refuse()]
        return [Ack()]

    capture = LogCapture()  # like capture_logs(), with the contextvars merged
    saved = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        settings = fast_settings.model_copy(update={"batch_size": 1})
        worker: StreamWorker[Envelope] = StreamWorker(
            redis_client, names, names.ingest, GROUP, handler, settings, stage="embed"
        )
        await asyncio.wait_for(worker.run(burst=True), 30)
    finally:
        structlog.configure(**saved)

    handled = [e for e in capture.entries if e["event"] == "handling"]
    assert [e["document"] for e in handled] == ["doc-ok", "doc-refused"]
    for entry in handled:
        assert entry["type"] == "test.item.v1"
        assert entry["tenant"] == "acme"
        assert entry["trace_id"] == TRACE_ID
        assert entry["message_id"]
    (dead,) = [e for e in capture.entries if e["event"] == "message dead-lettered"]
    assert dead["document"] == "doc-refused" and dead["trace_id"] == TRACE_ID
    assert dead["message_id"] == handled[1]["message_id"]
    # nothing stays bound after the message
    assert "message_id" not in structlog.contextvars.get_contextvars()
    assert len(seen) == 2
