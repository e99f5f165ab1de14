"""``embedstream search``: embed a query with the configured model and ask Chroma for one
tenant's nearest chunks (filtered by the ``tenant`` metadata key), with their text from
PostgreSQL (the system of record)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embedstream.config import Settings
from embedstream.schemas.tenancy import check_tenant


@dataclass
class Hit:
    chunk_id: str
    document_id: str
    distance: float
    text: str


async def search(settings: Settings, query: str, limit: int, *, tenant: str) -> list[Hit]:
    from embedstream.adapters.chroma.chunks import TENANT
    from embedstream.adapters.chroma.index import ChromaIndex
    from embedstream.adapters.embedder import load_embedder
    from embedstream.adapters.postgres import create_pool

    check_tenant(tenant)  # InvalidTenant before any model is loaded
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
