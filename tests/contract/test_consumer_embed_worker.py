"""Consumer pacts of the embed worker (group ``embedder``) for ``{prefix}:ingest``: the
ingress's commands and the stores' re-embed requests.

Each command of the pact is turned into stream fields (``codec.body_to_fields``), decoded
by the stage's decoder and handled by the real ``EmbedHandler`` (real chunker, the
``Embedder`` over a fake model, the real Redis for its hash register)."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as redis

from embedstream.adapters.embedder import Embedder
from embedstream.contracts.catalog import EMBED_WORKER, INGRESS, REEMBED
from embedstream.contracts.codec import STREAM_METADATA, body_to_fields
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.commands import DOCUMENT_REEMBED, DOCUMENT_UPSERT, DocumentReembed
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import (
    DOCUMENT_EMBEDDED,
    DOCUMENT_EMBEDDED_V2,
    DOCUMENT_REMOVED,
    DOCUMENT_REMOVED_V2,
    DocumentEmbedded,
    DocumentEmbeddedV2,
    DocumentRemoved,
    DocumentRemovedV2,
)
from embedstream.schemas.vectors import decode_vector
from embedstream.schemas.versions import version_text
from embedstream.streams.messages import Ack, Message
from embedstream.streams.names import StreamNames, stream_id_to_version
from embedstream.workers.embed import EMBED_STAGE, EmbedHandler
from tests.contract.interactions import INGEST, REEMBED_REQUESTS, build_pact
from tests.contract.support import drop_prefix, run_with_redis, write_pact

ENTRY_ID = "1732000000000-7"


def published(outcome: Any) -> dict[str, Envelope]:
    """The events an ack publishes, by type."""
    assert isinstance(outcome, Ack), f"the embed worker did not ack: {outcome!r}"
    found: dict[str, Envelope] = {}
    for publish in outcome.publish:
        fields = {
            k.encode(): (v if isinstance(v, bytes) else v.encode())
            for k, v in publish.fields.items()
        }
        envelope = Envelope.from_fields(fields)
        found[envelope.type] = envelope
    return found


async def embed(
    client: redis.Redis, names: StreamNames, embedder: Embedder, fields: dict[bytes, bytes]
) -> tuple[Envelope, dict[str, Envelope]]:
    command = EMBED_STAGE.decoder()(fields)
    handler = EmbedHandler(client, names, embedder, embedder.chunker(), JobTracker(client, names))
    [outcome] = await handler([Message(ENTRY_ID, names.ingest, fields, command, 1)])
    return command.envelope, published(outcome)


def test_embed_worker_handles_every_ingest_command(embedder: Embedder, names: StreamNames) -> None:
    pact = build_pact(EMBED_WORKER, INGRESS, INGEST)
    handled: list[str] = []

    def handler(body: str | bytes | None, metadata: dict[str, object]) -> None:
        assert body is not None
        assert metadata[STREAM_METADATA] == "{prefix}:ingest"
        fields = body_to_fields(json.loads(body))
        command, events = run_with_redis(lambda client: embed(client, names, embedder, fields))
        version = stream_id_to_version(ENTRY_ID)
        for event in events.values():
            assert event.subject == command.subject
            assert event.traceparent == command.traceparent
        if command.type == DOCUMENT_UPSERT:
            assert set(events) == {DOCUMENT_EMBEDDED, DOCUMENT_EMBEDDED_V2}
            embedded = events[DOCUMENT_EMBEDDED].payload(DocumentEmbedded)
            assert embedded.version == version
            assert embedded.chunk_count == len(embedded.chunks) > 0
            assert all(
                decode_vector(c.vector, embedded.dim).shape == (embedded.dim,)
                for c in embedded.chunks
            )
            twin = events[DOCUMENT_EMBEDDED_V2].payload(DocumentEmbeddedV2)
            assert twin == DocumentEmbeddedV2.from_v1(embedded)
        else:
            assert set(events) == {DOCUMENT_REMOVED, DOCUMENT_REMOVED_V2}
            assert events[DOCUMENT_REMOVED].payload(DocumentRemoved).version == version
            twin_version = events[DOCUMENT_REMOVED_V2].payload(DocumentRemovedV2).version
            assert twin_version == version_text(version)
        handled.append(command.type)

    try:
        pact.verify(handler, "Async")
    finally:
        run_with_redis(lambda client: drop_prefix(client, names.prefix))
    assert sorted(handled) == sorted(i.type for i in INGEST)
    write_pact(pact)


def test_embed_worker_handles_a_reembed_request(embedder: Embedder, names: StreamNames) -> None:
    """A store that cannot apply a reused embedding asks for the document again at the
    reuse's version: the embed worker embeds it in full at exactly that version."""
    pact = build_pact(EMBED_WORKER, REEMBED, REEMBED_REQUESTS)
    handled: list[str] = []

    def handler(body: str | bytes | None, metadata: dict[str, object]) -> None:
        assert body is not None
        assert metadata[STREAM_METADATA] == "{prefix}:ingest"
        fields = body_to_fields(json.loads(body))
        command, events = run_with_redis(lambda client: embed(client, names, embedder, fields))
        request = command.payload(DocumentReembed)
        event = events[DOCUMENT_EMBEDDED_V2].payload(DocumentEmbeddedV2)
        assert (event.version, event.reused, event.base_version) == (request.version, False, None)
        assert (event.text, event.metadata) == (request.text, request.metadata)
        assert event.chunk_count == len(event.chunks) > 0
        assert events[DOCUMENT_EMBEDDED].payload(DocumentEmbedded).version == int(request.version)
        handled.append(command.type)

    try:
        pact.verify(handler, "Async")
    finally:
        run_with_redis(lambda client: drop_prefix(client, names.prefix))
    assert handled == [DOCUMENT_REEMBED]
    write_pact(pact)
