"""Consumer pacts of the index (group ``indexer``) and persist (group ``persister``)
workers for ``{prefix}:embedded``.

Each event of the pact is turned into stream fields, decoded by the runtime's decoder and
then by the worker's own decoding: the index handler's ``_decode`` (payload validation,
vector decoding and checks, model guard) and the persist worker's ``to_write``."""

from __future__ import annotations

import asyncio
import json
from typing import cast

from embedstream.adapters.chroma import ChromaIndex
from embedstream.adapters.jobs import JobTracker
from embedstream.contracts.catalog import EMBED_WORKER, INDEX_WORKER, PERSIST_WORKER
from embedstream.contracts.codec import STREAM_METADATA, body_to_fields
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import DocumentEmbeddedV2, DocumentRemovedV2
from embedstream.streams.messages import decode_envelope
from embedstream.workers.index import IndexHandler
from embedstream.workers.index_order import DocumentOrder
from embedstream.workers.persist import to_write
from tests.contract.interactions import EMBEDDED_STREAM, build_pact
from tests.contract.support import write_pact

KINDS = ("embedded", "removed", "reused")


class ModelGuard:
    """Stands in for ``ChromaIndex``: records the model/dim the handler requires."""

    def __init__(self) -> None:
        self.required: list[tuple[str, int]] = []

    async def require_model(self, model: str, dim: int) -> None:
        self.required.append((model, dim))


def decoded(body: str | bytes | None, metadata: dict[str, object]) -> Envelope:
    assert body is not None
    assert metadata[STREAM_METADATA] == "{prefix}:embedded"
    return decode_envelope(body_to_fields(json.loads(body)))


def test_index_worker_decodes_every_embedded_event() -> None:
    pact = build_pact(INDEX_WORKER, EMBED_WORKER, EMBEDDED_STREAM)
    guard = ModelGuard()
    handler = IndexHandler(
        cast(ChromaIndex, guard), cast(DocumentOrder, None), cast(JobTracker, None)
    )
    kinds: list[str] = []

    def consume(body: str | bytes | None, metadata: dict[str, object]) -> None:
        envelope = decoded(body, metadata)
        change = asyncio.run(handler._decode(0, envelope))
        assert change.document_id == envelope.subject
        assert change.version > 2**53  # exact, from the integer or the version text
        suffix = envelope.type.rsplit(".", 1)[-1]
        if isinstance(change.event, DocumentEmbeddedV2):
            event = change.event
            if event.reused:
                assert change.vectors == ()
                kinds.append(f"reused.{suffix}")
            else:
                assert len(change.vectors) == event.chunk_count
                assert all(v.shape == (event.dim,) for v in change.vectors)
                kinds.append(f"embedded.{suffix}")
            assert guard.required[-1] == (event.model, event.dim)
        else:
            assert isinstance(change.event, DocumentRemovedV2)
            kinds.append(f"removed.{suffix}")

    pact.verify(consume, "Async")
    assert sorted(kinds) == sorted(f"{k}.{v}" for k in KINDS for v in ("v1", "v2"))
    write_pact(pact)


def test_persist_worker_maps_every_embedded_event_to_a_write() -> None:
    pact = build_pact(PERSIST_WORKER, EMBED_WORKER, EMBEDDED_STREAM)
    kinds: list[str] = []

    def consume(body: str | bytes | None, metadata: dict[str, object]) -> None:
        envelope = decoded(body, metadata)
        write = to_write(envelope)
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
