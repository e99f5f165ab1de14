"""The PostgreSQL adapter on the real server: migrations (once, idempotent, concurrent,
history checks) and the documents store (version guards, tombstones, reuse, chunk
replacement, no deadlocks between overlapping batches, the rebuild iterator).

Each test gets its own schema ``t_<random>`` in the database ``test``, dropped after."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from embedstream.adapters.chroma import collection as chroma_collection
from embedstream.adapters.postgres import (
    DocumentStore,
    Migration,
    MigrationError,
    WriteResult,
    available_migrations,
    create_pool,
    migrate,
)
from embedstream.config import PostgresSettings
from tests.integration.conftest import PG_DSN
from tests.support.builders import ROW_DIM as DIM
from tests.support.builders import row_delete as delete
from tests.support.builders import row_upsert as upsert
from tests.support.builders import row_vector as vector

pytestmark = pytest.mark.integration


@pytest.fixture
def store(pool: asyncpg.Pool) -> DocumentStore:
    return DocumentStore(pool)


T = "acme"


# -- migrations ------------------------------------------------------------------------


async def tables(schema: str) -> set[str]:
    conn = await asyncpg.connect(PG_DSN)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        return {row["table_name"] for row in rows}
    finally:
        await conn.close()


SHIPPED = [m.id for m in available_migrations()]
NEXT = max(m.version for m in available_migrations()) + 1


async def test_migrations_apply_once_then_nothing(schema: str) -> None:
    assert await migrate(PG_DSN, schema) == SHIPPED
    assert await migrate(PG_DSN, schema) == []
    assert await tables(schema) == {
        "schema_migrations",
        "documents",
        "chunks",
        "job_documents",
        "api_keys",
    }


async def test_migrate_over_an_open_connection(schema: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        assert await migrate(conn, schema) == SHIPPED
        assert await migrate(conn, schema) == []
        # the session lock was released: another session can take it at once
        key = "embedstream.migrate:" + schema
        assert await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key)
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_once(schema: str) -> None:
    results = await asyncio.gather(*(migrate(PG_DSN, schema) for _ in range(6)))
    assert sorted(results) == [[]] * 5 + [SHIPPED]
    conn = await asyncpg.connect(PG_DSN)
    try:
        count = await conn.fetchval(f'SELECT count(*) FROM "{schema}".schema_migrations')
        assert count == len(SHIPPED)
    finally:
        await conn.close()


async def test_new_migrations_apply_in_order_and_edited_ones_are_refused(schema: str) -> None:
    shipped = available_migrations()
    assert [m.id for m in shipped][:1] == ["0001_initial"]
    await migrate(PG_DSN, schema)
    extra = [
        Migration(NEXT + 1, "third", "ALTER TABLE documents ADD COLUMN c3 integer"),
        Migration(NEXT, "second", "ALTER TABLE documents ADD COLUMN c2 integer"),
    ]
    ordered = sorted([*shipped, *extra], key=lambda m: m.version)
    assert await migrate(PG_DSN, schema, migrations=ordered) == [
        f"{NEXT:04d}_second",
        f"{NEXT + 1:04d}_third",
    ]
    edited = [*shipped, Migration(NEXT, "second", "SELECT 1"), extra[0]]
    with pytest.raises(MigrationError, match=f"{NEXT:04d}_second was changed"):
        await migrate(PG_DSN, schema, migrations=edited)


async def test_a_failing_migration_leaves_nothing_behind(schema: str) -> None:
    await migrate(PG_DSN, schema)
    broken = [
        *available_migrations(),
        Migration(NEXT, "broken", "CREATE TABLE half (x int); SELECT no_such_function()"),
    ]
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(PG_DSN, schema, migrations=broken)
    assert "half" not in await tables(schema)
    assert await migrate(PG_DSN, schema) == []


async def test_schema_names_are_quoted() -> None:
    odd = f'T "odd" {uuid.uuid4().hex[:6]}'
    try:
        assert await migrate(PG_DSN, odd) == SHIPPED
        settings = PostgresSettings(database_url=PG_DSN, database_schema=odd)
        pg = await create_pool(settings)
        try:
            assert await DocumentStore(pg).write([upsert("a", 1)]) == [WriteResult.APPLIED]
        finally:
            await pg.close()
    finally:
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute('DROP SCHEMA IF EXISTS "{}" CASCADE'.format(odd.replace('"', '""')))
        await conn.close()


# -- the store -------------------------------------------------------------------------


async def test_upsert_stores_document_chunks_and_job(store: DocumentStore) -> None:
    assert await store.write([upsert("a", 10, chunks=3, meta='{"lang":"en"}')]) == [
        WriteResult.APPLIED
    ]
    doc = await store.get_document(T, "a")
    assert doc is not None
    assert (doc.version, doc.deleted, doc.text, doc.chunk_count, doc.dim) == (
        10,
        False,
        "hello",
        3,
        4,
    )
    assert doc.metadata_json == '{"lang": "en"}'
    chunks = await store.get_chunks(T, "a")
    assert [(c.idx, c.chunk_id, c.text) for c in chunks] == [
        (i, f"{T}/a:{i}", f"hello {i}") for i in range(3)
    ]
    for c in chunks:
        expected = np.frombuffer(vector(1000 + c.idx), dtype="<f4")
        np.testing.assert_array_equal(c.vector, expected)
    row = await store.pool.fetchrow("SELECT * FROM job_documents")
    assert (row["job_id"], row["document_id"], row["version"], row["kind"], row["applied"]) == (
        "j",
        "a",
        10,
        "upsert",
        True,
    )


async def test_versions_never_go_backwards(store: DocumentStore) -> None:
    assert await store.write([upsert("a", 5, chunks=4)]) == [WriteResult.APPLIED]
    assert await store.write([upsert("a", 4, chunks=1, text="old")]) == [WriteResult.STALE]
    assert await store.write([upsert("a", 5, chunks=1, text="same")]) == [WriteResult.STALE]
    assert await store.write([delete("a", 3)]) == [WriteResult.STALE]
    doc = await store.get_document(T, "a")
    assert doc is not None
    assert (doc.version, doc.text, doc.chunk_count) == (5, "hello", 4)
    assert len(await store.get_chunks(T, "a")) == 4
    assert await store.write([delete("a", 7)]) == [WriteResult.APPLIED]
    assert await store.write([upsert("a", 6)]) == [WriteResult.STALE]
    doc = await store.get_document(T, "a")
    assert doc is not None
    assert (doc.version, doc.deleted, doc.text) == (7, True, None)
    assert await store.get_chunks(T, "a") == []


async def test_shrinking_removes_surplus_chunks(store: DocumentStore) -> None:
    await store.write([upsert("a", 1, chunks=5)])
    await store.write([upsert("a", 2, chunks=2, text="short")])
    assert [c.text for c in await store.get_chunks(T, "a")] == ["short 0", "short 1"]


async def test_one_batch_applies_the_newest_message_per_document(store: DocumentStore) -> None:
    batch = [upsert("a", 3, chunks=3), upsert("a", 1), delete("b", 2), upsert("b", 4, chunks=1)]
    results = await store.write(batch)
    # resolved as if one at a time in version order, whatever the batching: a:1 and b:2
    # count as taken effect (then replaced in the same batch); only a:3 and b:4 are written
    assert results == [WriteResult.APPLIED] * 4
    assert await store.write([upsert("a", 2)]) == [WriteResult.STALE]
    a, b = await store.get_document(T, "a"), await store.get_document(T, "b")
    assert a is not None
    assert b is not None
    assert (a.version, a.chunk_count, b.version, b.deleted) == (3, 3, 4, False)
    assert len(await store.get_chunks(T, "b")) == 1


async def test_reused_updates_metadata_and_version_only(store: DocumentStore) -> None:
    await store.write([upsert("a", 1, chunks=3)])
    before = await store.get_chunks(T, "a")
    reused = upsert("a", 2, chunks=3, reused=True, meta='{"v":2}')
    assert await store.write([reused]) == [WriteResult.APPLIED]
    doc = await store.get_document(T, "a")
    assert doc is not None
    assert (doc.version, doc.metadata_json) == (2, '{"v": 2}')
    assert [(c.idx, c.embedding) for c in await store.get_chunks(T, "a")] == [
        (c.idx, c.embedding) for c in before
    ]
    other = dataclasses.replace(
        upsert("a", 3, reused=True, text="different content"), base_version=2
    )
    assert await store.write([other, upsert("b", 1, reused=True)]) == [
        WriteResult.CONFLICT,
        WriteResult.WAITING,
    ]
    assert await store.get_document(T, "b") is None
    assert await store.pool.fetchval("SELECT count(*) FROM job_documents") == 1


async def test_overlapping_batches_in_opposite_orders_do_not_deadlock(
    store: DocumentStore,
) -> None:
    docs = [f"d{i:03d}" for i in range(60)]
    for round_ in range(1, 6):
        forward = [upsert(d, round_ * 2, chunks=2) for d in docs]
        backward = [upsert(d, round_ * 2 + 1, chunks=1) for d in reversed(docs)]
        await asyncio.gather(store.write(forward), store.write(backward), store.write(forward))
    rows = await store.pool.fetch("SELECT version, chunk_count FROM documents")
    assert {(r["version"], r["chunk_count"]) for r in rows} == {(11, 1)}
    assert await store.pool.fetchval("SELECT count(*) FROM chunks") == 60


async def test_batches_mixing_full_and_reused_writes_do_not_deadlock(
    store: DocumentStore,
) -> None:
    # full upserts and reused ones are two statements: without the up-front document
    # locks, these two batches would lock a then b, and b then a
    docs = [f"d{i:03d}" for i in range(40)]
    await store.write([upsert(d, 1) for d in docs])
    half = len(docs) // 2
    for round_ in range(1, 6):
        v = round_ * 10
        one = [upsert(d, v) for d in docs[:half]] + [
            upsert(d, v + 1, reused=True) for d in docs[half:]
        ]
        two = [upsert(d, v + 2) for d in docs[half:]] + [
            upsert(d, v + 3, reused=True) for d in docs[:half]
        ]
        await asyncio.gather(store.write(one), store.write(two))
    assert await store.pool.fetchval("SELECT count(*) FROM chunks") == 80


async def test_iter_live_chunks_pages_through_live_documents(store: DocumentStore) -> None:
    await store.write([upsert(f"d{i}", 1, chunks=3) for i in range(5)] + [delete("d2", 2)])
    batches = [batch async for batch in store.iter_live_chunks(batch_size=4)]
    assert [len(b) for b in batches] == [4, 4, 4]
    keys = [(c.document_id, c.idx) for b in batches for c in b]
    assert keys == [(f"d{i}", n) for i in (0, 1, 3, 4) for n in range(3)]
    assert all(c.vector.shape == (DIM,) and c.model == "m" for b in batches for c in b)
    assert await store.count_live_chunks() == 12


async def test_tenants_own_their_copies_of_a_document_id(store: DocumentStore) -> None:
    """(tenant, document_id) is the identity: the same id of two tenants coexists, and
    versions and deletes are per tenant."""
    assert await store.write(
        [upsert("a", 10, chunks=2, tenant="t-a"), upsert("a", 20, chunks=3, tenant="t-b")]
    ) == [WriteResult.APPLIED, WriteResult.APPLIED]
    # t-a's version 15 is newer than t-a's 10, whatever t-b stored
    assert await store.write([upsert("a", 15, chunks=1, text="new", tenant="t-a")]) == [
        WriteResult.APPLIED
    ]
    assert await store.write([delete("a", 30, tenant="t-b")]) == [WriteResult.APPLIED]

    a, b = await store.get_document("t-a", "a"), await store.get_document("t-b", "a")
    assert a is not None and b is not None
    assert (a.tenant, a.version, a.deleted, a.text) == ("t-a", 15, False, "new")
    assert (b.tenant, b.version, b.deleted) == ("t-b", 30, True)
    assert [c.chunk_id for c in await store.get_chunks("t-a", "a")] == ["t-a/a:0"]
    assert await store.get_chunks("t-b", "a") == []
    assert await store.get_document("t-c", "a") is None
    rows = await store.pool.fetch(
        "SELECT tenant, job_id, document_id FROM job_documents ORDER BY tenant"
    )
    assert [tuple(r) for r in rows] == [("t-a", "j", "a"), ("t-b", "j", "a")]
    live = [c async for batch in store.iter_live_chunks() for c in batch]
    assert [(c.tenant, c.document_id, c.idx) for c in live] == [("t-a", "a", 0)]


async def test_migration_0003_gives_existing_rows_the_default_tenant(schema: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        for migration in available_migrations()[:2]:
            await conn.execute(migration.sql)
        await conn.execute(
            "INSERT INTO documents (document_id, version, text) VALUES ('x/y', 1, 't')"
        )
        await conn.execute(
            "INSERT INTO chunks VALUES ('x/y', 0, 'x/y:0', 't', '\\x00000000'::bytea)"
        )
        await conn.execute(available_migrations()[2].sql)
        doc = await conn.fetchrow("SELECT tenant, document_id FROM documents")
        chunk = await conn.fetchrow("SELECT tenant, chunk_id FROM chunks")
        assert tuple(doc) == ("default", "x/y")
        assert tuple(chunk) == ("default", "default/x/y:0")
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def test_reindex_refuses_mixed_models_before_dropping_anything(
    store: DocumentStore, schema: str, tmp_path: Path, prefix: str
) -> None:
    """int8 vectors next to fp32 ones in PostgreSQL (an operator switched backends
    midway): rebuilding one collection from them would mix models, so reindex refuses
    and leaves the existing collection alone."""
    from embedstream.adapters.chroma.index import ChromaIndex
    from embedstream.config import ChromaSettings, RedisSettings, Settings
    from embedstream.reindex import MixedModels, reindex
    from tests.conftest import REDIS_URL

    fp32 = upsert("a", 1)
    int8 = dataclasses.replace(upsert("b", 2), model="m+int8")
    await store.write([fp32, int8])
    assert await store.live_models() == {("m", DIM): 1, ("m+int8", DIM): 1}

    settings = Settings()
    settings.__dict__["postgres"] = PostgresSettings(database_url=PG_DSN, database_schema=schema)
    settings.__dict__["chroma"] = ChromaSettings(chroma_path=tmp_path / "chroma")
    settings.__dict__["redis"] = RedisSettings(redis_url=REDIS_URL, stream_prefix=prefix)
    index = ChromaIndex(settings.chroma)
    await index.open()
    await index.require_model("m", DIM)
    index.close()

    with pytest.raises(MixedModels, match=r"'m\+int8' \(dim 4\): 1 documents"):
        await reindex(settings, progress=lambda *_: None)
    index = ChromaIndex(settings.chroma)
    try:
        await index.open()
        assert chroma_collection.recorded_model(index.collection) == ("m", DIM)  # not dropped
    finally:
        index.close()
