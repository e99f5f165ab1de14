"""Consumer pacts of the index (group ``indexer``) and persist (group ``persister``)
workers for ``{prefix}:embedded``.

Each event of the pact is turned into stream fields and decoded by the stage's decoder
(the runtime's, with the stage's payload types: the events check their own chunks and
vectors), then turned into what the stage writes: the index stage's Chroma write
(``index_plan.plan_write``) and the persist stage's row (``persist.to_write``)."""

from __future__ import annotations

import json

from embedstream.adapters.chroma.writes import RefreshDocument, ReplaceDocument
from embedstream.contracts.catalog import EMBED_WORKER, INDEX_WORKER, PERSIST_WORKER
from embedstream.contracts.codec import STREAM_METADATA, body_to_fields
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import (
    DocumentEmbeddedV2,
    DocumentEvent,
    DocumentRemovedV2,
    as_v2,
)
from embedstream.workers.index import INDEX_STAGE
from embedstream.workers.index_plan import Change, DocumentChanges, plan_write
from embedstream.workers.persist import PERSIST_STAGE, to_write
from tests.contract.interactions import EMBEDDED_STREAM, build_pact
from tests.contract.support import write_pact

KINDS = ("embedded", "removed", "reused")


def decoded(
    body: str | bytes | None, metadata: dict[str, object], reader: str
) -> tuple[Envelope, DocumentEvent]:
    """The envelope and the event in its v2 form, as the stage's handler gets them."""
    assert body is not None
    assert metadata[STREAM_METADATA] == "{prefix}:embedded"
    stage = INDEX_STAGE if reader == "index" else PERSIST_STAGE
    message = stage.decoder()(body_to_fields(json.loads(body)))
    return message.envelope, as_v2(message.payload)


def test_index_worker_decodes_every_embedded_event() -> None:
    pact = build_pact(INDEX_WORKER, EMBED_WORKER, EMBEDDED_STREAM)
    kinds: list[str] = []

    def consume(body: str | bytes | None, metadata: dict[str, object]) -> None:
        envelope, event = decoded(body, metadata, "index")
        change = Change(0, envelope.tenant, event)
        assert change.document_id == envelope.subject
        assert change.version > 2**53  # exact, from the integer or the version text
        write = plan_write(DocumentChanges(change.key, change.tenant, change.document_id, [change]))
        suffix = envelope.type.rsplit(".", 1)[-1]
        if isinstance(event, DocumentEmbeddedV2):
            if event.reused:  # re-labels the chunks Chroma holds
                assert isinstance(write, RefreshDocument)
                assert len(write.metadatas) == event.chunk_count
                kinds.append(f"reused.{suffix}")
            else:
                assert isinstance(write, ReplaceDocument)
                assert len(write.chunks) == event.chunk_count
                assert all(c.embedding.shape == (event.dim,) for c in write.chunks)
                kinds.append(f"embedded.{suffix}")
        else:
            assert isinstance(event, DocumentRemovedV2)
            kinds.append(f"removed.{suffix}")

    pact.verify(consume, "Async")
    assert sorted(kinds) == sorted(f"{k}.{v}" for k in KINDS for v in ("v1", "v2"))
    write_pact(pact)


def test_persist_worker_maps_every_embedded_event_to_a_write() -> None:
    pact = build_pact(PERSIST_WORKER, EMBED_WORKER, EMBEDDED_STREAM)
    kinds: list[str] = []

    def consume(body: str | bytes | None, metadata: dict[str, object]) -> None:
        envelope, event = decoded(body, metadata, "persist")
        write = to_write(envelope.tenant, event)
        assert write.document_id == envelope.subject
        assert write.version > 2**53
        suffix = envelope.type.rsplit(".", 1)[-1]
        if write.deleted:
            kinds.append(f"removed.{suffix}")
        elif write.reused:
            assert write.chunks == ()
            # v2 names the version the reuse builds on, v1 cannot
            assert (write.base_version is not None) == (suffix == "v2")
            kinds.append(f"reused.{suffix}")
        else:
            assert write.chunk_count == len(write.chunks) > 0
            assert all(len(row.embedding) == 4 * (write.dim or 0) for row in write.chunks)
            kinds.append(f"embedded.{suffix}")

    pact.verify(consume, "Async")
    assert sorted(kinds) == sorted(f"{k}.{v}" for k in KINDS for v in ("v1", "v2"))
    write_pact(pact)
