"""Migration 0005 (full-text column and GIN index) on a table that already holds chunks:
existing rows get their tsvector, the index serves full-text matches, the term
statistics exist at once, and what the persist stage writes afterwards is covered too."""

from __future__ import annotations

import numpy as np
import pytest
from bench.search_data import Doc, load_postgres, unit

from embedstream.adapters.postgres import DocumentStore, available_migrations, create_pool, migrate
from embedstream.config import PostgresSettings
from embedstream.search.lexical import LexicalIndex
from tests.integration.conftest import PG_DSN

pytestmark = pytest.mark.integration


def docs(tenant: str, start: int, count: int) -> list[Doc]:
    return [
        Doc(
            tenant,
            f"d{n}",
            [f"chunk {n} about ordinary things", f"more text with code ZX{n:04d}"],
            [unit(np.ones(4)), unit(np.arange(4) + 1)],
        )
        for n in range(start, start + count)
    ]


async def test_0005_indexes_the_chunks_already_stored(schema: str) -> None:
    before = [m for m in available_migrations() if m.version < 5]
    assert [m.id for m in available_migrations() if m.version == 5] == ["0005_chunk_full_text"]
    await migrate(PG_DSN, schema, migrations=before)
    pool = await create_pool(PostgresSettings(database_url=PG_DSN, database_schema=schema))
    try:
        store = DocumentStore(pool)
        await load_postgres(store, docs("acme", 0, 300), model="m", dim=4)
        assert await migrate(PG_DSN, schema) == ["0005_chunk_full_text"]
        await pool.expire_connections()  # the pool's cached statements predate the column

        mismatched = await pool.fetchval(
            "SELECT count(*) FROM chunks WHERE tsv IS DISTINCT FROM to_tsvector('simple', text)"
        )
        assert mismatched == 0
        assert await pool.fetchval("SELECT count(*) FROM chunks") == 600
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(
                row[0]
                for row in await conn.fetch(
                    "EXPLAIN SELECT chunk_id FROM chunks WHERE tsv @@ 'zx0042'::tsquery"
                )
            )
        assert "chunks_tsv_idx" in plan
        lexical = LexicalIndex(pool)
        stats = await lexical.stats()
        assert stats.analyzed and stats.rows == 600  # ANALYZE ran with the migration
        assert stats.frequencies["chunk"] == pytest.approx(0.5)

        # rows written after the migration are indexed as they are written
        await load_postgres(store, docs("acme", 300, 2), model="m", dim=4)
        weights = await lexical.weights("where is ZX0301")
        assert list(weights) == ["zx0301"]
        hits = await lexical.search("acme", weights, limit=10)
        assert [(h.document_id, h.idx) for h in hits] == [("d301", 1)]
        old = await lexical.search("acme", await lexical.weights("ZX0007"), limit=10)
        assert [(h.document_id, h.idx) for h in old] == [("d7", 1)]
        assert await lexical.search("globex", await lexical.weights("ZX0007"), limit=10) == []
    finally:
        await pool.close()
