"""What the persist stage writes, and the pure rules that decide which write takes effect.

A batch may hold several messages for one document. They are resolved as if applied one
by one in version order against the stored state, which gives the same result whatever
the batching: older-or-equal versions are refused, a delete leaves a tombstone, and a
``reused`` upsert (unchanged text, no chunks) only takes effect on a live document with
the same content hash; one that cannot is ``WAITING`` for the version it builds on, or a
``CONFLICT`` when that version (or a newer one) is stored with other content (see
``embedstream.workers.reembed``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChunkRow:
    idx: int
    chunk_id: str
    text: str
    embedding: bytes
    """little-endian float32, ``dim`` values"""


@dataclass(frozen=True, slots=True)
class DocumentWrite:
    """One message's effect on a tenant's document: an upsert (full, or ``reused``) or a
    delete (tombstone)."""

    job_id: str
    document_id: str
    version: int
    tenant: str
    deleted: bool = False
    reused: bool = False
    content_hash: str | None = None
    text: str | None = None
    metadata_json: str = "{}"
    model: str | None = None
    dim: int | None = None
    chunk_count: int = 0
    chunks: tuple[ChunkRow, ...] = ()
    base_version: int | None = None
    """for a reused upsert: the version whose stored chunks it reuses, when known"""

    @property
    def document(self) -> tuple[str, str]:
        """(tenant, document_id): the document's identity."""
        return (self.tenant, self.document_id)

    @property
    def kind(self) -> str:
        return "delete" if self.deleted else "upsert"


class WriteResult(enum.Enum):
    APPLIED = "applied"
    """took effect (a later write in the same batch may have replaced it)"""
    STALE = "stale"
    """refused: the stored version (or an equal one in the batch) is newer or the same"""
    CONFLICT = "conflict"
    """a reused upsert whose document is stored at its base version or newer, but deleted
    or with other content: the chunks it reuses are not here and will not come"""
    WAITING = "waiting"
    """a reused upsert whose base version is not stored yet (or not known): its chunks
    may still come"""


@dataclass(frozen=True, slots=True)
class StoredState:
    version: int
    deleted: bool
    content_hash: str | None


@dataclass(frozen=True, slots=True)
class DocumentPlan:
    write: DocumentWrite | None
    """the row to store (None: nothing changes); ``reused`` means metadata/version only"""
    results: dict[int, WriteResult]
    """per message position in the batch"""


def plan_document(
    stored: StoredState | None, messages: Sequence[tuple[int, DocumentWrite]]
) -> DocumentPlan:
    """Resolve all of one document's messages in a batch against its stored state."""
    state = stored
    base: DocumentWrite | None = None  # the last full upsert or delete that took effect
    top: DocumentWrite | None = None  # the last write that took effect
    results: dict[int, WriteResult] = {}
    for position, write in sorted(messages, key=lambda item: item[1].version):
        if state is not None and write.version <= state.version:
            results[position] = WriteResult.STALE
            continue
        if write.reused and (
            state is None or state.deleted or state.content_hash != write.content_hash
        ):
            reused_from = write.base_version
            arrived = state is not None and reused_from is not None and state.version >= reused_from
            results[position] = WriteResult.CONFLICT if arrived else WriteResult.WAITING
            continue
        results[position] = WriteResult.APPLIED
        state = StoredState(write.version, write.deleted, write.content_hash)
        top = write
        if not write.reused:
            base = write
    if top is not None and top.reused and base is not None:
        # a full upsert earlier in this batch, then a reused one: store the full one
        # under the newer version and metadata
        top = dataclasses.replace(base, version=top.version, metadata_json=top.metadata_json)
    return DocumentPlan(top, results)
