"""Consumer pact of the embed worker (group ``embedder``) for ``{prefix}:ingest``.

Each command of the pact is turned into stream fields (``codec.body_to_fields``), decoded
by the runtime's decoder and handled by the real ``EmbedHandler`` (real chunker, the
``Embedder`` over a fake model, the real Redis for its hash register)."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as redis

from embedstream.adapters.embedder import Embedder
from embedstream.adapters.jobs import JobTracker
from embedstream.contracts.catalog import EMBED_WORKER, INGRESS
from embedstream.contracts.codec import STREAM_METADATA, body_to_fields
from embedstream.schemas.commands import DOCUMENT_UPSERT
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import (
    DOCUMENT_EMBEDDED,
    DOCUMENT_REMOVED,
    DocumentEmbedded,
    DocumentRemoved,
)
from embedstream.schemas.vectors import decode_vector
from embedstream.streams.messages import Ack, Message, decode_envelope
from embedstream.streams.names import StreamNames, stream_id_to_version
from embedstream.workers.embed import EmbedHandler
from tests.contract.interactions import INGEST, build_pact
from tests.contract.support import drop_prefix, run_with_redis, write_pact

ENTRY_ID = "1732000000000-7"


def published(outcome: Any) -> Envelope:
    assert isinstance(outcome, Ack), f"the embed worker did not ack: {outcome!r}"
    [publish] = outcome.publish
    fields = {
        k.encode(): (v if isinstance(v, bytes) else v.encode()) for k, v in publish.fields.items()
    }
    return Envelope.from_fields(fields)


async def embed(
    client: redis.Redis, names: StreamNames, embedder: Embedder, fields: dict[bytes, bytes]
) -> tuple[Envelope, Envelope]:
    command = decode_envelope(fields)
    handler = EmbedHandler(client, names, embedder, embedder.chunker(), JobTracker(client, names))
    [outcome] = await handler([Message(ENTRY_ID, names.ingest, fields, command, 1)])
    return command, published(outcome)


def test_embed_worker_handles_every_ingest_command(embedder: Embedder, names: StreamNames) -> None:
    pact = build_pact(EMBED_WORKER, INGRESS, INGEST)
    handled: list[str] = []

    def handler(body: str | bytes | None, metadata: dict[str, object]) -> None:
        assert body is not None
        assert metadata[STREAM_METADATA] == "{prefix}:ingest"
        fields = body_to_fields(json.loads(body))
        command, event = run_with_redis(lambda client: embed(client, names, embedder, fields))
        assert event.subject == command.subject
        assert event.traceparent == command.traceparent
        if command.type == DOCUMENT_UPSERT:
            assert event.type == DOCUMENT_EMBEDDED
            embedded = event.payload(DocumentEmbedded)
            assert embedded.version == stream_id_to_version(ENTRY_ID)
            assert embedded.chunk_count == len(embedded.chunks) > 0
            assert all(
                decode_vector(c.vector, embedded.dim).shape == (embedded.dim,)
                for c in embedded.chunks
            )
        else:
            assert event.type == DOCUMENT_REMOVED
            assert event.payload(DocumentRemoved).version == stream_id_to_version(ENTRY_ID)
        handled.append(command.type)

    try:
        pact.verify(handler, "Async")
    finally:
        run_with_redis(lambda client: drop_prefix(client, names.prefix))
    assert sorted(handled) == sorted(i.type for i in INGEST)
    write_pact(pact)
