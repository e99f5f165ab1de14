"""The documents store in PostgreSQL: batch writes for the persist stage, reads for the
API and for rebuilding Chroma.

A document is (tenant, document_id): every statement keys on both. A batch is written in
one transaction. It first locks the stored rows of its documents in (tenant, document id)
order and reads their versions (one statement), resolves every message
against them (``model.plan_document``), then writes set-based: one ``INSERT ... ON
CONFLICT`` for full upserts and tombstones (in document id order, so new rows are taken
in the same global order), one ``UPDATE`` for reused upserts (rows already locked), both
still guarded by ``version <``; one ``DELETE`` of the replaced chunks, one ``COPY`` of
the new ones, and one insert into ``job_documents``. Replicas writing overlapping batches
therefore wait for each other instead of deadlocking (a deadlock needs three writers
racing to create the same new documents; PostgreSQL then aborts one, which is retried).
Row locks use no shared lock-table slots, whatever the batch size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from embedstream.adapters.postgres.model import (
    DocumentWrite,
    StoredState,
    WriteResult,
    plan_document,
)
from embedstream.logging import get_logger
from embedstream.schemas.vectors import vector_array

if TYPE_CHECKING:  # numpy only where a vector is read (the API process never does)
    from embedstream.schemas.vectors import Vector

log = get_logger("embedstream.postgres")

Document = tuple[str, str]
"""(tenant, document_id)"""

LOCK_STORED = """
SELECT d.tenant, d.document_id, d.version, d.deleted, d.content_hash
FROM documents AS d
JOIN unnest($1::text[], $2::text[]) AS k (tenant, document_id)
  ON d.tenant = k.tenant AND d.document_id = k.document_id
ORDER BY d.tenant, d.document_id
FOR NO KEY UPDATE OF d
"""

UPSERT_DOCUMENTS = """
INSERT INTO documents AS d
    (document_id, version, deleted, content_hash, text, metadata, model, dim, chunk_count,
     tenant)
SELECT * FROM unnest(
    $1::text[], $2::bigint[], $3::boolean[], $4::text[], $5::text[], $6::jsonb[],
    $7::text[], $8::integer[], $9::integer[], $10::text[]
) ORDER BY 10, 1
ON CONFLICT (tenant, document_id) DO UPDATE SET
    version = EXCLUDED.version,
    deleted = EXCLUDED.deleted,
    content_hash = EXCLUDED.content_hash,
    text = EXCLUDED.text,
    metadata = EXCLUDED.metadata,
    model = EXCLUDED.model,
    dim = EXCLUDED.dim,
    chunk_count = EXCLUDED.chunk_count,
    updated_at = now()
WHERE d.version < EXCLUDED.version
RETURNING d.tenant, d.document_id
"""

TOUCH_DOCUMENTS = """
UPDATE documents AS d SET version = u.version, metadata = u.metadata, updated_at = now()
FROM unnest($1::text[], $2::bigint[], $3::jsonb[], $4::text[], $5::text[])
    AS u (document_id, version, metadata, content_hash, tenant)
WHERE d.tenant = u.tenant
  AND d.document_id = u.document_id
  AND d.version < u.version
  AND NOT d.deleted
  AND d.content_hash = u.content_hash
RETURNING d.tenant, d.document_id
"""

DELETE_CHUNKS = """
DELETE FROM chunks AS c
USING unnest($1::text[], $2::text[]) AS k (tenant, document_id)
WHERE c.tenant = k.tenant AND c.document_id = k.document_id
"""

CHUNK_COLUMNS = ("tenant", "document_id", "idx", "chunk_id", "text", "embedding")

RECORD_JOBS = """
INSERT INTO job_documents AS j (tenant, job_id, document_id, version, kind, applied)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::boolean[]
)
ORDER BY 1, 2, 3
ON CONFLICT (tenant, job_id, document_id) DO UPDATE SET
    version = EXCLUDED.version,
    kind = EXCLUDED.kind,
    applied = EXCLUDED.applied,
    persisted_at = now()
WHERE j.version < EXCLUDED.version
"""

CHUNK_SELECT = """
SELECT c.tenant, c.document_id, c.idx, c.chunk_id, c.text, c.embedding,
       d.version, d.model, d.dim, d.metadata::text AS metadata_json, d.content_hash
FROM chunks AS c JOIN documents AS d USING (tenant, document_id)
"""

LIVE_CHUNKS_AFTER = (
    CHUNK_SELECT
    + """
WHERE NOT d.deleted
  AND (c.tenant, c.document_id, c.idx) > ($1::text, $2::text, $3::integer)
ORDER BY c.tenant, c.document_id, c.idx
LIMIT $4
"""
)

DOCUMENT_CHUNKS = CHUNK_SELECT + "WHERE c.tenant = $1 AND c.document_id = $2 ORDER BY c.idx"


@dataclass(frozen=True, slots=True)
class StoredDocument:
    tenant: str
    document_id: str
    version: int
    deleted: bool
    content_hash: str | None
    text: str | None
    metadata_json: str
    model: str | None
    dim: int | None
    chunk_count: int


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A live document's chunk with its vector, as Chroma needs it for a rebuild."""

    tenant: str
    document_id: str
    idx: int
    chunk_id: str
    text: str
    embedding: bytes
    version: int
    model: str | None
    dim: int | None
    metadata_json: str
    content_hash: str | None = None

    @property
    def vector(self) -> Vector:
        return vector_array(self.embedding)


class DocumentStore:
    """Documents, chunks and job records in the schema the pool's search_path names."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- writing ---------------------------------------------------------------------

    async def write(self, writes: Sequence[DocumentWrite]) -> list[WriteResult]:
        """Apply a batch in one transaction; one result per write, in order."""
        if not writes:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            return await write_batch(conn, writes)

    # -- reading ---------------------------------------------------------------------

    async def get_document(self, tenant: str, document_id: str) -> StoredDocument | None:
        """A tenant's document (None: never stored for this tenant)."""
        row = await self.pool.fetchrow(
            """SELECT tenant, document_id, version, deleted, content_hash, text,
                      metadata::text AS metadata_json, model, dim, chunk_count
               FROM documents WHERE tenant = $1 AND document_id = $2""",
            tenant,
            document_id,
        )
        return StoredDocument(**dict(row)) if row is not None else None

    async def get_chunks(self, tenant: str, document_id: str) -> list[StoredChunk]:
        rows = await self.pool.fetch(DOCUMENT_CHUNKS, tenant, document_id)
        return [StoredChunk(**dict(row)) for row in rows]

    async def iter_live_chunks(self, batch_size: int = 1_000) -> AsyncIterator[list[StoredChunk]]:
        """Every live document's chunks with vectors, in (tenant, document_id, idx) order, in
        batches of at most ``batch_size``: what a Chroma rebuild reads. Each batch is its
        own short query (keyset pagination), so no long transaction holds back vacuum;
        writes made meanwhile are seen or not, as for any online rebuild."""
        after: tuple[str, str, int] = ("", "", -1)
        while True:
            rows = await self.pool.fetch(LIVE_CHUNKS_AFTER, *after, batch_size)
            if not rows:
                return
            batch = [StoredChunk(**dict(row)) for row in rows]
            yield batch
            if len(rows) < batch_size:
                return
            after = (batch[-1].tenant, batch[-1].document_id, batch[-1].idx)

    async def live_models(self) -> dict[tuple[str | None, int | None], int]:
        """(model, dim) -> how many live documents with chunks hold vectors of it."""
        rows = await self.pool.fetch(
            "SELECT model, dim, count(*) AS documents FROM documents "
            "WHERE NOT deleted AND chunk_count > 0 GROUP BY model, dim ORDER BY model, dim"
        )
        return {(row["model"], row["dim"]): int(row["documents"]) for row in rows}

    async def count_live_chunks(self) -> int:
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM chunks AS c JOIN documents AS d USING (tenant, document_id) "
            "WHERE NOT d.deleted"
        )
        return count


async def write_batch(
    conn: asyncpg.Connection, writes: Sequence[DocumentWrite]
) -> list[WriteResult]:
    """The body of ``DocumentStore.write``; ``conn`` must be inside a transaction."""
    by_document: dict[Document, list[tuple[int, DocumentWrite]]] = defaultdict(list)
    for position, write in enumerate(writes):
        by_document[write.document].append((position, write))
    documents = sorted(by_document)
    stored = {
        (row["tenant"], row["document_id"]): StoredState(
            row["version"], row["deleted"], row["content_hash"]
        )
        for row in await conn.fetch(
            LOCK_STORED, [t for t, _ in documents], [d for _, d in documents]
        )
    }

    results: list[WriteResult] = [WriteResult.STALE] * len(writes)
    full: list[DocumentWrite] = []
    touch: list[DocumentWrite] = []
    for document in documents:
        plan = plan_document(stored.get(document), by_document[document])
        for position, result in plan.results.items():
            results[position] = result
        if plan.write is not None:
            (touch if plan.write.reused else full).append(plan.write)

    written = await _upsert_documents(conn, full) | await _touch_documents(conn, touch)
    refused = {w.document for w in (*full, *touch)} - written
    if refused:
        # a document created by a concurrent batch after our lock statement, newer than ours
        log.warning("writes refused by the version guard", documents=sorted(refused)[:20])
        for position, write in enumerate(writes):
            if write.document in refused and results[position] is WriteResult.APPLIED:
                results[position] = WriteResult.STALE
    await _replace_chunks(conn, [w for w in full if w.document in written])
    await _record_jobs(conn, writes, results)
    return results


async def _upsert_documents(conn: asyncpg.Connection, writes: list[DocumentWrite]) -> set[Document]:
    if not writes:
        return set()
    rows = await conn.fetch(
        UPSERT_DOCUMENTS,
        [w.document_id for w in writes],
        [w.version for w in writes],
        [w.deleted for w in writes],
        [w.content_hash for w in writes],
        [w.text for w in writes],
        [w.metadata_json for w in writes],
        [w.model for w in writes],
        [w.dim for w in writes],
        [w.chunk_count for w in writes],
        [w.tenant for w in writes],
    )
    return {(row["tenant"], row["document_id"]) for row in rows}


async def _touch_documents(conn: asyncpg.Connection, writes: list[DocumentWrite]) -> set[Document]:
    if not writes:
        return set()
    rows = await conn.fetch(
        TOUCH_DOCUMENTS,
        [w.document_id for w in writes],
        [w.version for w in writes],
        [w.metadata_json for w in writes],
        [w.content_hash for w in writes],
        [w.tenant for w in writes],
    )
    return {(row["tenant"], row["document_id"]) for row in rows}


async def _replace_chunks(conn: asyncpg.Connection, writes: list[DocumentWrite]) -> None:
    """Drop the chunks of documents replaced or deleted, then copy in the new ones."""
    if not writes:
        return
    await conn.execute(DELETE_CHUNKS, [w.tenant for w in writes], [w.document_id for w in writes])
    records: list[tuple[Any, ...]] = [
        (w.tenant, w.document_id, c.idx, c.chunk_id, c.text, c.embedding)
        for w in writes
        if not w.deleted
        for c in w.chunks
    ]
    if records:
        await conn.copy_records_to_table("chunks", records=records, columns=CHUNK_COLUMNS)


async def _record_jobs(
    conn: asyncpg.Connection, writes: Sequence[DocumentWrite], results: list[WriteResult]
) -> None:
    """One row per (job, document): the newest version of it this stage has finished."""
    latest: dict[tuple[str, str, str], tuple[DocumentWrite, bool]] = {}
    for write, result in zip(writes, results, strict=True):
        if result in (WriteResult.CONFLICT, WriteResult.WAITING):
            continue
        key = (write.tenant, write.job_id, write.document_id)
        if key not in latest or latest[key][0].version < write.version:
            latest[key] = (write, result is WriteResult.APPLIED)
    if not latest:
        return
    rows = list(latest.values())
    await conn.execute(
        RECORD_JOBS,
        [w.tenant for w, _ in rows],
        [w.job_id for w, _ in rows],
        [w.document_id for w, _ in rows],
        [w.version for w, _ in rows],
        [w.kind for w, _ in rows],
        [applied for _, applied in rows],
    )
