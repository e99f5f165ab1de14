"""Loading chunks with precomputed vectors straight into both stores, as the index and
persist workers would have left them (the same adapter functions: ``DocumentStore.write``
for PostgreSQL, ``upsert_chunks`` with ``chunk_metadata`` for Chroma), without the model
or the streams. For the search benchmark (100,000 chunks in minutes) and the filter
tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from embedstream.adapters.chroma.chunks import ChunkRecord, chunk_metadata, upsert_chunks
from embedstream.adapters.chroma.collection import bind_model, open_collection
from embedstream.adapters.postgres import ChunkRow, DocumentStore, DocumentWrite
from embedstream.schemas.tenancy import chunk_id

Vector = npt.NDArray[np.float32]


@dataclass
class Doc:
    tenant: str
    document_id: str
    chunks: list[str]
    vectors: list[Vector]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256("\n".join(self.chunks).encode()).hexdigest()


def unit(vector: npt.ArrayLike) -> Vector:
    v = np.asarray(vector, dtype=np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


async def load_postgres(store: DocumentStore, docs: Sequence[Doc], *, model: str, dim: int) -> None:
    """One upsert per document (version 1), in batches of 500 documents."""
    for start in range(0, len(docs), 500):
        writes = [
            DocumentWrite(
                job_id="load",
                document_id=doc.document_id,
                version=1,
                tenant=doc.tenant,
                content_hash=doc.content_hash,
                text="\n".join(doc.chunks),
                metadata_json=json.dumps(doc.metadata),
                model=model,
                dim=dim,
                chunk_count=len(doc.chunks),
                chunks=tuple(
                    ChunkRow(
                        n,
                        chunk_id(doc.tenant, doc.document_id, n),
                        text,
                        vector.astype("<f4").tobytes(),
                    )
                    for n, (text, vector) in enumerate(zip(doc.chunks, doc.vectors, strict=True))
                ),
            )
            for doc in docs[start : start + 500]
        ]
        await store.write(writes)


def load_chroma(client: Any, name: str, docs: Sequence[Doc], *, model: str, dim: int) -> None:
    """The collection (cosine, bound to ``model``) with every chunk of ``docs``."""
    collection = open_collection(client, name)
    bind_model(client, name, model, dim)
    records = [
        ChunkRecord(
            id=chunk_id(doc.tenant, doc.document_id, n),
            embedding=vector,
            metadata=chunk_metadata(
                doc.metadata,
                tenant=doc.tenant,
                document_id=doc.document_id,
                index=n,
                version=1,
                job_id="load",
                content_hash=doc.content_hash,
            ),
        )
        for doc in docs
        for n, vector in enumerate(doc.vectors)
    ]
    upsert_chunks(collection, records)
