"""A document's chunks in Chroma: plain synchronous functions over a ``Collection``
(what ``embedstream reindex`` needs to rebuild the index from PostgreSQL).

A document is (tenant, document id). Chunk ids are deterministic,
``{tenant}/{document_id}:{index}``; each chunk's metadata carries its tenant, document
id, chunk index, version, job id and content hash next to the user's metadata, and every
read, update and delete of a document's chunks filters by tenant and document id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from chromadb.api.models.Collection import Collection

from embedstream.schemas.commands import MetadataValue
from embedstream.schemas.tenancy import document_key
from embedstream.schemas.vectors import Vector

T = TypeVar("T")

MAX_BATCH = 1000

# Keys embedstream writes on every chunk; they win over user metadata of the same name.
TENANT = "tenant"
DOCUMENT_ID = "document_id"
CHUNK_INDEX = "chunk_index"
VERSION = "version"
JOB_ID = "job_id"
CONTENT_HASH = "content_hash"

ChunkMetadata = dict[str, MetadataValue]


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk as Chroma stores it."""

    id: str
    embedding: Vector
    metadata: Mapping[str, MetadataValue]
    document: str | None = None


def chunk_metadata(
    user: Mapping[str, MetadataValue],
    *,
    tenant: str,
    document_id: str,
    index: int,
    version: int,
    job_id: str,
    content_hash: str,
) -> ChunkMetadata:
    """User metadata plus embedstream's own keys (which take precedence)."""
    return {
        **user,
        TENANT: tenant,
        DOCUMENT_ID: document_id,
        CHUNK_INDEX: index,
        VERSION: version,
        JOB_ID: job_id,
        CONTENT_HASH: content_hash,
    }


def document_chunks(
    collection: Collection, documents: Sequence[tuple[str, str]]
) -> dict[str, dict[int, tuple[str, Mapping[str, Any]]]]:
    """The chunks stored for each (tenant, document id): document key
    (``{tenant}/{document_id}``) -> chunk index -> (id, metadata). Each query filters by
    the tenant and the document ids."""
    found: dict[str, dict[int, tuple[str, Mapping[str, Any]]]] = {}
    by_tenant: dict[str, list[str]] = {}
    for tenant, document_id in dict.fromkeys(documents):
        by_tenant.setdefault(tenant, []).append(document_id)
    for tenant, document_ids in by_tenant.items():
        for part in _parts(document_ids, 500):
            where: Any = {"$and": [{TENANT: tenant}, {DOCUMENT_ID: {"$in": part}}]}
            reply = collection.get(where=where, include=["metadatas"])
            for record_id, metadata in zip(reply["ids"], reply["metadatas"] or [], strict=True):
                if metadata is None:
                    continue
                key = document_key(tenant, str(metadata.get(DOCUMENT_ID)))
                index = int(str(metadata.get(CHUNK_INDEX, -1)))
                found.setdefault(key, {})[index] = (record_id, metadata)
    return found


def upsert_chunks(
    collection: Collection, chunks: Sequence[ChunkRecord], *, batch_size: int | None = None
) -> int:
    """Upsert chunks in as few calls as Chroma's batch limit allows; returns the count.
    Documents are sent only when every chunk of a call has one."""
    size = batch_size or _max_batch(collection)
    for part in _parts(chunks, size):
        documents = [c.document for c in part]
        collection.upsert(
            ids=[c.id for c in part],
            embeddings=np.stack([c.embedding for c in part]),
            metadatas=[dict(c.metadata) for c in part],
            documents=[d for d in documents if d is not None]
            if all(d is not None for d in documents)
            else None,
        )
    return len(chunks)


def update_metadatas(
    collection: Collection,
    ids: Sequence[str],
    metadatas: Sequence[Mapping[str, MetadataValue | None]],
) -> int:
    """Metadata-only update (``None`` values delete keys); embeddings stay as they are."""
    size = _max_batch(collection)
    for start in range(0, len(ids), size):
        collection.update(
            ids=list(ids[start : start + size]),
            metadatas=[dict(m) for m in metadatas[start : start + size]],
        )
    return len(ids)


def delete_ids(collection: Collection, ids: Sequence[str]) -> int:
    size = _max_batch(collection)
    for part in _parts(list(ids), size):
        collection.delete(ids=part)
    return len(ids)


def delete_documents(collection: Collection, tenant: str, document_ids: Sequence[str]) -> int:
    """Delete every chunk of these documents of ``tenant`` (no other tenant's); returns
    how many chunks there were."""
    stored = document_chunks(collection, [(tenant, d) for d in document_ids])
    return delete_ids(collection, [cid for chunks in stored.values() for cid, _ in chunks.values()])


def _max_batch(collection: Collection) -> int:
    """Chroma's own limit, capped where bigger calls stop paying off (MEASUREMENTS.md)."""
    try:
        limit = int(collection._client.get_max_batch_size())
    except Exception:  # pragma: no cover - a server that does not say
        limit = MAX_BATCH
    return max(1, min(limit, MAX_BATCH))


def _parts(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
