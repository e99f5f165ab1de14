"""Document writes in batches: the state a batch leaves each document in, applied with
one read and at most one upsert, update and delete call (per Chroma batch limit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chromadb.api.models.Collection import Collection

from embedstream.adapters.chroma.chunks import (
    CONTENT_HASH,
    ChunkMetadata,
    ChunkRecord,
    delete_ids,
    document_chunks,
    update_metadatas,
    upsert_chunks,
)
from embedstream.errors import RetryableError
from embedstream.schemas.commands import MetadataValue
from embedstream.schemas.tenancy import document_key


class ChunksNotIndexed(RetryableError):
    """A metadata-only update found the document's chunks missing or of other content."""


@dataclass(frozen=True)
class _Document:
    tenant: str
    document_id: str

    @property
    def key(self) -> str:
        """``{tenant}/{document_id}``: what ``apply_writes`` reports refusals under."""
        return document_key(self.tenant, self.document_id)


@dataclass(frozen=True)
class ReplaceDocument(_Document):
    """The document's chunks become exactly ``chunks`` (surplus old chunks go)."""

    chunks: Sequence[ChunkRecord]


@dataclass(frozen=True)
class RefreshDocument(_Document):
    """Same content, new metadata: chunk ``n`` gets ``metadatas[n]``. Requires the chunks
    of ``content_hash`` to be stored already (``ChunksNotIndexed`` otherwise)."""

    content_hash: str
    metadatas: Sequence[ChunkMetadata]


@dataclass(frozen=True)
class RemoveDocument(_Document):
    pass


IndexWrite = ReplaceDocument | RefreshDocument | RemoveDocument
"""What a batch writes for one document in Chroma."""


@dataclass
class _Calls:
    upserts: list[ChunkRecord]
    update_ids: list[str]
    updates: list[dict[str, MetadataValue | None]]
    deletes: list[str]


def apply_writes(collection: Collection, writes: Sequence[IndexWrite]) -> dict[str, Exception]:
    """Apply document writes with one read and at most one upsert, update and delete call
    (per Chroma batch limit). Returns the documents (by document key) that were not
    written, with why; an exception from Chroma itself propagates (nothing is known to be
    written then)."""
    stored = document_chunks(collection, [(w.tenant, w.document_id) for w in writes])
    calls = _Calls([], [], [], [])
    refused: dict[str, Exception] = {}
    for write in writes:
        have = stored.get(write.key, {})
        if isinstance(write, ReplaceDocument):
            calls.upserts.extend(write.chunks)
            keep = len(write.chunks)
        elif isinstance(write, RefreshDocument):
            error = _plan_refresh(write, have, calls)
            if error is not None:
                refused[write.key] = error
                continue
            keep = len(write.metadatas)
        else:
            keep = 0
        calls.deletes.extend(cid for index, (cid, _) in have.items() if index >= keep)
    if calls.upserts:
        upsert_chunks(collection, calls.upserts)
    if calls.update_ids:
        update_metadatas(collection, calls.update_ids, calls.updates)
    if calls.deletes:
        delete_ids(collection, calls.deletes)
    return refused


def _plan_refresh(
    write: RefreshDocument,
    have: Mapping[int, tuple[str, Mapping[str, Any]]],
    calls: _Calls,
) -> Exception | None:
    missing = [
        n
        for n in range(len(write.metadatas))
        if n not in have or have[n][1].get(CONTENT_HASH) != write.content_hash
    ]
    if missing:
        return ChunksNotIndexed(
            f"document {write.document_id!r} of tenant {write.tenant!r}: {len(missing)} of "
            f"{len(write.metadatas)} chunks of content {write.content_hash[:12]} are not "
            f"indexed yet (its earlier embedding has not reached the index); will retry"
        )
    for n, metadata in enumerate(write.metadatas):
        cid, old = have[n]
        stale: dict[str, MetadataValue | None] = {k: None for k in old if k not in metadata}
        calls.update_ids.append(cid)
        calls.updates.append({**stale, **metadata})
    return None
