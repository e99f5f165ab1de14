"""What the index stage writes for a batch: pure functions from events to Chroma writes.

A batch's events are grouped by document key (``{tenant}/{document_id}``); of each
document's events, those the version register says are applied already (an equal
version too: both type versions of one event, or a re-embedded event after its reuse)
are superseded, and the rest fold into one write (``plan_write``): a removal empties the
document, a full embedding replaces it, a reused embedding re-labels the latest full
embedding of the same content (in the batch, or else the one Chroma holds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from embedstream.adapters.chroma.chunks import ChunkMetadata, ChunkRecord, chunk_metadata
from embedstream.adapters.chroma.writes import (
    IndexWrite,
    RefreshDocument,
    RemoveDocument,
    ReplaceDocument,
)
from embedstream.schemas.events import DocumentEmbeddedV2, DocumentEvent, DocumentRemovedV2
from embedstream.schemas.tenancy import chunk_id, document_key


@dataclass(frozen=True)
class Change:
    """One event of the batch, at its position, with what its envelope says."""

    position: int
    tenant: str
    event: DocumentEvent
    attempt: int = 1
    traceparent: str | None = None

    @property
    def document_id(self) -> str:
        return self.event.document_id

    @property
    def key(self) -> str:
        """The document key ``{tenant}/{document_id}``."""
        return document_key(self.tenant, self.event.document_id)

    @property
    def version(self) -> int:
        return self.event.version_number


@dataclass
class DocumentChanges:
    """One document's events newer than its registered version, in version order: what
    one write applies, and the messages it settles."""

    key: str
    tenant: str
    document_id: str
    changes: list[Change] = field(default_factory=list)

    @property
    def latest(self) -> Change:
        return self.changes[-1]


def newer(version: int, registered: int | None) -> bool:
    return registered is None or version > registered


def by_document(changes: Sequence[Change]) -> dict[str, list[Change]]:
    """The batch's changes by document key, in batch order."""
    grouped: dict[str, list[Change]] = {}
    for change in changes:
        grouped.setdefault(change.key, []).append(change)
    return grouped


def split_superseded(
    changes: Sequence[Change], registered: int | None
) -> tuple[DocumentChanges | None, list[Change]]:
    """A document's changes newer than ``registered`` (None when there are none), and
    the ones it supersedes (applied already: they are done without a write)."""
    first = changes[0]
    pending = DocumentChanges(first.key, first.tenant, first.document_id)
    superseded: list[Change] = []
    for change in sorted(changes, key=lambda c: c.version):
        if newer(change.version, registered):
            pending.changes.append(change)
        else:
            superseded.append(change)
    return (pending if pending.changes else None), superseded


def plan_write(document: DocumentChanges, *, store_documents: bool = False) -> IndexWrite:
    """The state after the document's changes in version order (see the module doc)."""
    base: DocumentEmbeddedV2 | None = None
    for change in document.changes:
        event = change.event
        if isinstance(event, DocumentRemovedV2):
            base = None
        elif not event.reused:
            base = event
        elif base is not None and base.content_hash != event.content_hash:
            base = None
    latest = document.latest.event
    tenant, document_id = document.tenant, document.document_id
    if isinstance(latest, DocumentRemovedV2):
        return RemoveDocument(tenant, document_id)
    if base is None:
        return RefreshDocument(
            tenant,
            document_id,
            latest.content_hash,
            [metadata(tenant, latest, n) for n in range(latest.chunk_count)],
        )
    return ReplaceDocument(tenant, document_id, records(tenant, base, latest, store_documents))


def records(
    tenant: str, content: DocumentEmbeddedV2, labels: DocumentEmbeddedV2, store_documents: bool
) -> list[ChunkRecord]:
    """The chunks of ``content`` (vectors and text) under the labels of ``labels``."""
    return [
        ChunkRecord(
            id=chunk_id(tenant, content.document_id, chunk.index),
            embedding=chunk.vector_array,
            metadata=metadata(tenant, labels, chunk.index),
            document=chunk.text if store_documents else None,
        )
        for chunk in content.chunks
    ]


def metadata(tenant: str, event: DocumentEmbeddedV2, index: int) -> ChunkMetadata:
    return chunk_metadata(
        event.metadata,
        tenant=tenant,
        document_id=event.document_id,
        index=index,
        version=event.version_number,
        job_id=event.job_id,
        content_hash=event.content_hash,
    )
