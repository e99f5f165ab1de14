"""``embedstream reindex``: rebuild the Chroma collection from PostgreSQL (invariant 8).
Stop the index workers while it runs: Chroma writes carry no version guard."""

from __future__ import annotations

import json
from collections.abc import Callable

from embedstream.config import Settings
from embedstream.logging import get_logger

log = get_logger("embedstream.reindex")


class MixedModels(RuntimeError):
    """PostgreSQL holds vectors of more than one model; a collection holds one."""


async def reindex(
    settings: Settings, *, batch_size: int = 500, progress: Callable[[int, int], None]
) -> int:
    """Drop and rebuild the Chroma collection from PostgreSQL; returns chunks written.
    The index workers' version register is reset to what was rebuilt; every chunk keeps
    its tenant (id, metadata and register key)."""
    from embedstream.adapters.chroma.chunks import ChunkRecord, chunk_metadata, upsert_chunks
    from embedstream.adapters.chroma.index import ChromaIndex
    from embedstream.adapters.postgres import DocumentStore, create_pool
    from embedstream.adapters.redis_client import create_redis
    from embedstream.schemas.tenancy import document_key

    pool = await create_pool(settings.postgres)
    index = ChromaIndex(settings.chroma)
    redis = create_redis(settings.redis)
    register = settings.redis.names().key("index", "versions")
    written = 0
    try:
        store = DocumentStore(pool)
        models = await store.live_models()
        if len(models) > 1:  # refuse before dropping anything
            held = ", ".join(f"{m!r} (dim {d}): {n} documents" for (m, d), n in models.items())
            raise MixedModels(
                f"PostgreSQL holds vectors of {len(models)} models ({held}); one collection "
                "holds one model (e.g. torch/onnx vs onnx-int8 are two). Re-submit the "
                "documents still on the old model so the current embed workers re-embed them, "
                "then run `embedstream reindex` again; the collection was left as it was."
            )
        total = await store.count_live_chunks()
        if not await index.acquire_writer():
            raise RuntimeError(
                f"an index worker is writing the embedded Chroma folder "
                f"{settings.chroma.chroma_path}: stop the index workers before "
                "`embedstream reindex`"
            )
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
