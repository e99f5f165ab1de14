"""``embedstream search`` and ``embedstream reindex``: read-side tools over the stores.

``search`` embeds a query with the configured model and asks Chroma for one tenant's
nearest chunks (filtered by the ``tenant`` metadata key), with their text from
PostgreSQL (the system of record). ``reindex`` rebuilds the Chroma collection from
PostgreSQL (invariant 8); stop the index workers while it runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from embedstream.config import Settings
from embedstream.logging import get_logger

log = get_logger("embedstream.search")


@dataclass
class Hit:
    chunk_id: str
    document_id: str
    distance: float
    text: str


async def search(settings: Settings, query: str, limit: int, *, tenant: str) -> list[Hit]:
    from embedstream.adapters.chroma import TENANT, ChromaIndex
    from embedstream.adapters.embedder import load_embedder
    from embedstream.adapters.postgres import create_pool

    embedder = await load_embedder(settings.embed)
    index = ChromaIndex(settings.chroma)
    pool = await create_pool(settings.postgres)
    try:
        vector = (await embedder.encode([query]))[0]
        collection = await index.open()
        await index.require_model(embedder.name, embedder.dim)
        found: Any = await index.call(
            lambda: collection.query(
                query_embeddings=[vector.tolist()],
                n_results=limit,
                where={TENANT: tenant},
                include=["distances"],
            )
        )
        ids: list[str] = found["ids"][0]
        distances: list[float] = found["distances"][0]
        rows = await pool.fetch(
            "SELECT chunk_id, document_id, text FROM chunks "
            "WHERE tenant = $1 AND chunk_id = ANY($2::text[])",
            tenant,
            ids,
        )
    finally:
        await pool.close()
        index.close()
        embedder.close()
    by_id = {row["chunk_id"]: row for row in rows}
    return [
        Hit(cid, by_id[cid]["document_id"], dist, by_id[cid]["text"])
        for cid, dist in zip(ids, distances, strict=True)
        if cid in by_id
    ]


async def reindex(
    settings: Settings, *, batch_size: int = 500, progress: Callable[[int, int], None]
) -> int:
    """Drop and rebuild the Chroma collection from PostgreSQL; returns chunks written.
    The index workers' version register is reset to what was rebuilt; every chunk keeps
    its tenant (id, metadata and register key)."""
    from embedstream.adapters.chroma import (
        ChromaIndex,
        ChunkRecord,
        chunk_metadata,
        document_key,
        upsert_chunks,
    )
    from embedstream.adapters.postgres import DocumentStore, create_pool
    from embedstream.adapters.redis_client import create_redis

    pool = await create_pool(settings.postgres)
    index = ChromaIndex(settings.chroma)
    redis = create_redis(settings.redis)
    register = settings.redis.names.key("index", "versions")
    written = 0
    try:
        store = DocumentStore(pool)
        total = await store.count_live_chunks()
        collection = await index.reset()
        versions: dict[str, int] = {}
        progress(0, total)
        async for batch in store.iter_live_chunks(batch_size):
            first = batch[0]
            if first.model is None or first.dim is None:
                raise RuntimeError(f"document {first.document_id!r} has no model recorded")
            await index.require_model(first.model, first.dim)
            records = [
                ChunkRecord(
                    id=chunk.chunk_id,
                    embedding=chunk.vector,
                    metadata=chunk_metadata(
                        json.loads(chunk.metadata_json),
                        tenant=chunk.tenant,
                        document_id=chunk.document_id,
                        index=chunk.idx,
                        version=chunk.version,
                        job_id="reindex",
                        content_hash=chunk.content_hash or "",
                    ),
                    document=chunk.text if settings.chroma.chroma_store_documents else None,
                )
                for chunk in batch
            ]
            written += await index.call(upsert_chunks, collection, records)
            versions.update(
                {document_key(chunk.tenant, chunk.document_id): chunk.version for chunk in batch}
            )
            progress(written, total)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(register)
            if versions:
                pipe.hset(register, mapping={k: str(v) for k, v in versions.items()})
            await pipe.execute()
    finally:
        await redis.aclose()
        await pool.close()
        index.close()
    log.info("chroma rebuilt from postgresql", chunks=written, documents=len(versions))
    return written
