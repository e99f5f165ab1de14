"""The index stage's write planning (``workers/index_plan.py``), without Chroma: which of
a document's events a batch applies, and the one write they fold into."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedstream.adapters.chroma.writes import RefreshDocument, RemoveDocument, ReplaceDocument
from embedstream.schemas.events import DocumentEmbedded, DocumentRemoved, as_v2
from embedstream.workers.index_plan import (
    Change,
    DocumentChanges,
    by_document,
    plan_write,
    split_superseded,
)
from tests.support.builders import TENANT, embedded_event, removed_event


def changes(*events: DocumentEmbedded | DocumentRemoved) -> list[Change]:
    return [Change(n, TENANT, as_v2(event)) for n, event in enumerate(events)]


def document(*events: DocumentEmbedded | DocumentRemoved) -> DocumentChanges:
    pending, superseded = split_superseded(changes(*events), registered=None)
    assert pending is not None and superseded == []
    return pending


def versions(items: Sequence[Change]) -> list[int]:
    return [item.version for item in items]


def test_events_at_or_below_the_registered_version_are_superseded() -> None:
    batch = changes(
        embedded_event("j", "d", 7),
        embedded_event("j", "d", 5),  # below
        removed_event("j", "d", 6),  # equal: the same event in another type version
        embedded_event("j", "d", 9),
    )
    pending, superseded = split_superseded(batch, registered=6)
    assert pending is not None
    assert versions(pending.changes) == [7, 9]  # in version order, whatever the batch order
    assert sorted(versions(superseded)) == [5, 6]
    assert pending.latest.version == 9
    nothing, everything = split_superseded(batch, registered=9)
    assert nothing is None
    assert sorted(versions(everything)) == [5, 6, 7, 9]


def test_a_batch_is_grouped_by_document_key_so_tenants_stay_apart() -> None:
    mine = Change(0, "t-a", as_v2(embedded_event("j", "doc", 1)))
    theirs = Change(1, "t-b", as_v2(embedded_event("j", "doc", 2)))
    again = Change(2, "t-a", as_v2(removed_event("j", "doc", 3)))
    assert by_document([mine, theirs, again]) == {"t-a/doc": [mine, again], "t-b/doc": [theirs]}


def test_a_removal_last_removes_the_document() -> None:
    write = plan_write(document(embedded_event("j", "d", 1), removed_event("j2", "d", 2)))
    assert write == RemoveDocument(TENANT, "d")


def test_a_full_embedding_replaces_the_documents_chunks() -> None:
    event = embedded_event("j", "d", 3, ("one", "two", "three"), metadata={"k": "v"})
    write = plan_write(document(event))
    assert isinstance(write, ReplaceDocument)
    assert [r.id for r in write.chunks] == [f"{TENANT}/d:{n}" for n in range(3)]
    assert [r.metadata["chunk_index"] for r in write.chunks] == [0, 1, 2]
    assert all(r.metadata["version"] == 3 and r.metadata["k"] == "v" for r in write.chunks)
    assert all(r.metadata["tenant"] == TENANT for r in write.chunks)
    for record, chunk in zip(write.chunks, event.chunks, strict=True):
        assert np.array_equal(record.embedding, chunk.vector_array)
    assert all(r.document is None for r in write.chunks)  # text is PostgreSQL's
    stored = plan_write(document(event), store_documents=True)
    assert isinstance(stored, ReplaceDocument)
    assert [r.document for r in stored.chunks] == ["one", "two", "three"]


def test_a_reuse_after_its_full_embedding_in_the_batch_writes_that_content_relabelled() -> None:
    full = embedded_event("j1", "d", 1, ("same", "words"), metadata={"rev": 1})
    reuse = embedded_event("j2", "d", 2, ("same", "words"), metadata={"rev": 2}, reused=True)
    write = plan_write(document(full, reuse))
    assert isinstance(write, ReplaceDocument)  # the batch holds the vectors: no Chroma read
    assert [r.metadata["version"] for r in write.chunks] == [2, 2]
    assert [r.metadata["job_id"] for r in write.chunks] == ["j2", "j2"]
    assert [r.metadata["rev"] for r in write.chunks] == [2, 2]
    assert np.array_equal(write.chunks[1].embedding, full.chunks[1].vector_array)


def test_a_reuse_without_its_content_in_the_batch_relabels_what_chroma_holds() -> None:
    alone = embedded_event("j", "d", 4, ("a", "b", "c"), reused=True)
    write = plan_write(document(alone))
    assert isinstance(write, RefreshDocument)
    assert write.content_hash == alone.content_hash
    assert [m["chunk_index"] for m in write.metadatas] == [0, 1, 2]
    assert all(m["version"] == 4 for m in write.metadatas)

    # a removal, or a full embedding of other content, in between: no base in the batch
    for between in (removed_event("j", "d", 2), embedded_event("j", "d", 2, ("other",))):
        full = embedded_event("j", "d", 1, ("a", "b", "c"))
        later = embedded_event("j", "d", 3, ("a", "b", "c"), reused=True)
        assert isinstance(plan_write(document(full, between, later)), RefreshDocument)
