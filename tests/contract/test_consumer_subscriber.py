"""Consumer pact of a downstream subscriber for ``{prefix}:results``: the example service
(``examples/downstream``) on the subscriber kit.

Each event of the pact is turned into stream fields and goes through the kit exactly as
the runtime would pass it: ``Subscriber.decode`` (envelope, type lookup, payload
validation against the model) and ``Subscriber.handle`` (the service's handlers)."""

from __future__ import annotations

import asyncio
import json

from examples.downstream.service import build_subscriber

from embedstream.contracts.catalog import RESULTS as RESULTS_PROVIDER
from embedstream.contracts.catalog import SAMPLE_SUBSCRIBER
from embedstream.contracts.codec import STREAM_METADATA, body_to_fields
from embedstream.streams.messages import Ack, Message
from tests.contract.interactions import RESULTS, build_pact
from tests.contract.support import write_pact


def test_sample_subscriber_handles_every_result_event() -> None:
    pact = build_pact(SAMPLE_SUBSCRIBER, RESULTS_PROVIDER, RESULTS)
    sub, stats = build_subscriber("redis://unused", "embedstream")
    handled: list[str] = []

    def consume(body: str | bytes | None, metadata: dict[str, object]) -> None:
        assert body is not None
        assert metadata[STREAM_METADATA] == "{prefix}:results"
        fields = body_to_fields(json.loads(body))
        delivery = sub.decode(fields)
        assert delivery.payload is not None, f"{delivery.envelope.type} has no handler"
        message = Message("1732000000000-0", sub.stream, fields, delivery, 1)
        [outcome] = asyncio.run(sub.handle([message]))
        assert isinstance(outcome, Ack), outcome
        handled.append(delivery.envelope.type)

    pact.verify(consume, "Async")
    assert sorted(handled) == sorted(i.type for i in RESULTS)
    assert (stats.completed, stats.failed, stats.deleted) == (1, 1, 1)
    assert stats.failures and stats.failures[0]["stage"] == "persist"
    write_pact(pact)
