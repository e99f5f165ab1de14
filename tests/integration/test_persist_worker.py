"""The persist worker end to end on the real Redis and PostgreSQL: events on
``{prefix}:embedded`` (built here, as the embed worker writes them) consumed in burst
mode by group ``persister`` into a fresh schema; job marks through ``JobTracker``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import msgspec
import numpy as np
import pytest
import redis.asyncio as redis
from pydantic import BaseModel
from structlog.testing import capture_logs

from embedstream.adapters.postgres import DocumentStore, DocumentWrite, WriteResult
from embedstream.adapters.postgres import create_pool as create_pg_pool
from embedstream.config import ConsumerSettings, PostgresSettings, RedisSettings, Settings
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.commands import DocumentReembed
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import (
    DOCUMENT_EMBEDDED,
    DocumentEmbedded,
    DocumentEmbeddedV2,
    DocumentRemoved,
    EmbeddedChunk,
    EmbeddedStreamEvent,
)
from embedstream.schemas.vectors import encode_vector
from embedstream.schemas.versions import version_text
from embedstream.streams.decoding import Decoded
from embedstream.streams.messages import Ack, DeadLetter, Message, Retry
from embedstream.streams.names import PERSIST, StreamNames
from embedstream.streams.runner import RunStats
from embedstream.workers.persist import PERSIST_STAGE, PersistHandler, build_persist_worker
from embedstream.workers.stage import run_stage
from tests.integration.conftest import PG_DSN
from tests.support.builders import Kind, publish, submit_job

pytestmark = pytest.mark.integration

DIM = 384


T = "acme"


class Pipeline:
    """Submits jobs and writes the embed stage's events, then runs the persist worker."""

    def __init__(
        self,
        client: redis.Redis,
        names: StreamNames,
        tracker: JobTracker,
        pool: asyncpg.Pool,
        settings: ConsumerSettings,
    ) -> None:
        self.client, self.names, self.tracker = client, names, tracker
        self.pool, self.settings = pool, settings
        self.store = DocumentStore(pool)
        self.vectors: dict[tuple[str, int, int], np.ndarray] = {}

    async def job(self, *docs: tuple[str, Kind], tenant: str = T) -> str:
        """A job with (document_id, kind) commands, so stage marks have a job to count."""
        return await submit_job(self.tracker, docs, tenant=tenant, text="t")

    def embedded(
        self,
        job_id: str,
        doc: str,
        version: int,
        chunks: int = 2,
        *,
        text: str = "some text",
        metadata: dict[str, Any] | None = None,
        reused: bool = False,
    ) -> DocumentEmbedded:
        rng = np.random.default_rng()
        items = []
        for i in range(0 if reused else chunks):
            vec = rng.standard_normal(DIM).astype(np.float32)
            self.vectors[(doc, version, i)] = vec
            items.append(
                EmbeddedChunk(
                    id=f"{T}/{doc}:{i}", index=i, text=f"{text} #{i}", vector=encode_vector(vec)
                )
            )
        return DocumentEmbedded(
            job_id=job_id,
            document_id=doc,
            version=version,
            content_hash=f"sha:{text}",
            model="all-MiniLM-L6-v2",
            dim=DIM,
            text=text,
            metadata=metadata or {},
            chunk_count=chunks,
            reused=reused,
            chunks=items,
        )

    async def send(self, *events: BaseModel, tenant: str = T) -> None:
        """The events on the embedded stream, each in an envelope of its type."""
        await publish(self.client, self.names.embedded, *events, tenant=tenant)

    async def run(self) -> RunStats:
        worker = build_persist_worker(
            self.client, self.pool, self.names, self.settings, tracker=self.tracker
        )
        return await asyncio.wait_for(worker.run(burst=True), 30)

    async def persist_mark(self, job_id: str, doc: str) -> str | None:
        status = await self.tracker.status(job_id)
        assert status is not None
        item = next(i for i in status.items if i.document_id == doc)
        return item.stages.get("persist")

    async def entries(self, stream: str | None = None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        rows: Any = await self.client.xrange(stream or self.names.embedded)
        return list(rows)

    async def add(self, fields: Mapping[Any, Any]) -> None:
        await self.client.xadd(self.names.embedded, dict(fields))

    async def dlq(self) -> list[dict[bytes, bytes]]:
        return [fields for _, fields in await self.entries(self.names.dlq)]


@pytest.fixture
def pipe(
    redis_client: redis.Redis,
    names: StreamNames,
    tracker: JobTracker,
    pool: asyncpg.Pool,
    fast_settings: ConsumerSettings,
) -> Pipeline:
    return Pipeline(redis_client, names, tracker, pool, fast_settings)


async def test_embedded_document_is_persisted_with_vectors(pipe: Pipeline) -> None:
    job = await pipe.job(("a", "upsert"))
    await pipe.send(pipe.embedded(job, "a", 7, chunks=3, metadata={"lang": "en", "n": 2}))
    stats = await pipe.run()
    assert (stats.acked, stats.dead_lettered, stats.retried) == (1, 0, 0)

    doc = await pipe.store.get_document(T, "a")
    assert doc is not None
    assert (doc.version, doc.deleted, doc.text, doc.chunk_count) == (7, False, "some text", 3)
    assert (doc.model, doc.dim, doc.content_hash) == ("all-MiniLM-L6-v2", DIM, "sha:some text")
    assert doc.metadata_json == '{"n": 2, "lang": "en"}'
    chunks = await pipe.store.get_chunks(T, "a")
    assert [(c.idx, c.chunk_id, c.text) for c in chunks] == [
        (i, f"{T}/a:{i}", f"some text #{i}") for i in range(3)
    ]
    for chunk in chunks:
        np.testing.assert_array_equal(chunk.vector, pipe.vectors[("a", 7, chunk.idx)])
    assert await pipe.persist_mark(job, "a") == "done"
    row = await pipe.pool.fetchrow("SELECT * FROM job_documents")
    assert (row["job_id"], row["document_id"], row["version"], row["applied"]) == (
        job,
        "a",
        7,
        True,
    )
    info = await pipe.client.xpending(pipe.names.embedded, PERSIST.group)
    assert info["pending"] == 0


async def test_a_shorter_version_removes_surplus_chunks(pipe: Pipeline) -> None:
    job = await pipe.job(("a", "upsert"))
    await pipe.send(pipe.embedded(job, "a", 1, chunks=5))
    await pipe.run()
    await pipe.send(pipe.embedded(job, "a", 2, chunks=2, text="shorter"))
    await pipe.run()
    chunks = await pipe.store.get_chunks(T, "a")
    assert [c.text for c in chunks] == ["shorter #0", "shorter #1"]
    np.testing.assert_array_equal(chunks[1].vector, pipe.vectors[("a", 2, 1)])
    doc = await pipe.store.get_document(T, "a")
    assert doc is not None
    assert (doc.version, doc.chunk_count) == (2, 2)


async def test_delete_leaves_a_tombstone_and_is_reported(pipe: Pipeline) -> None:
    job = await pipe.job(("a", "upsert"))
    await pipe.send(pipe.embedded(job, "a", 1, chunks=3))
    await pipe.run()
    job2 = await pipe.job(("a", "delete"))
    await pipe.send(DocumentRemoved(job_id=job2, document_id="a", version=2))
    stats = await pipe.run()
    assert stats.acked == 1
    doc = await pipe.store.get_document(T, "a")
    assert doc is not None
    assert (doc.version, doc.deleted, doc.text, doc.chunk_count) == (2, True, None, 0)
    assert await pipe.store.get_chunks(T, "a") == []
    assert await pipe.persist_mark(job2, "a") == "done"
    row = await pipe.pool.fetchrow(
        "SELECT kind, version FROM job_documents WHERE job_id = $1", job2
    )
    assert (row["kind"], row["version"]) == ("delete", 2)


@pytest.mark.parametrize("together", [False, True], ids=["separate-batches", "one-batch"])
@pytest.mark.parametrize(
    ("newer", "older", "expect_deleted"),
    [
        ("upsert", "upsert", False),
        ("delete", "upsert", True),
        ("upsert", "delete", False),
        ("delete", "delete", True),
    ],
)
async def test_an_older_version_after_a_newer_one_changes_nothing(
    pipe: Pipeline, together: bool, newer: str, older: str, expect_deleted: bool
) -> None:
    job = await pipe.job(("a", "upsert"))

    def event(kind: str, version: int) -> DocumentEmbedded | DocumentRemoved:
        if kind == "delete":
            return DocumentRemoved(job_id=job, document_id="a", version=version)
        return pipe.embedded(job, "a", version, chunks=version, text=f"v{version}")

    if together:
        await pipe.send(event(newer, 5), event(older, 4))
        stats = await pipe.run()
    else:
        await pipe.send(event(newer, 5))
        await pipe.run()
        await pipe.send(event(older, 4))
        stats = await pipe.run()
    assert (stats.dead_lettered, stats.retried) == (0, 0)
    doc = await pipe.store.get_document(T, "a")
    assert doc is not None
    assert (doc.version, doc.deleted) == (5, expect_deleted)
    expected_chunks = [] if expect_deleted else [f"v5 #{i}" for i in range(5)]
    assert [c.text for c in await pipe.store.get_chunks(T, "a")] == expected_chunks
    assert await pipe.persist_mark(job, "a") == "done"


async def test_reused_embedding_updates_metadata_and_keeps_chunks(pipe: Pipeline) -> None:
    job = await pipe.job(("a", "upsert"), ("b", "upsert"))
    await pipe.send(pipe.embedded(job, "a", 1, chunks=3, metadata={"tag": "old"}))
    await pipe.run()
    before = await pipe.store.get_chunks(T, "a")
    # in one batch: b's full embedding, then a reused one for b (sequential semantics)
    await pipe.send(
        pipe.embedded(job, "a", 2, chunks=3, metadata={"tag": "new"}, reused=True),
        pipe.embedded(job, "b", 3, chunks=2),
        pipe.embedded(job, "b", 4, chunks=2, metadata={"k": 1}, reused=True),
    )
    stats = await pipe.run()
    assert (stats.acked, stats.retried, stats.dead_lettered) == (3, 0, 0)
    a = await pipe.store.get_document(T, "a")
    assert a is not None
    assert (a.version, a.metadata_json, a.chunk_count) == (2, '{"tag": "new"}', 3)
    after = await pipe.store.get_chunks(T, "a")
    assert [(c.idx, c.text, c.embedding) for c in after] == [
        (c.idx, c.text, c.embedding) for c in before
    ]
    b = await pipe.store.get_document(T, "b")
    assert b is not None
    assert (b.version, b.metadata_json, b.chunk_count) == (4, '{"k": 1}', 2)
    assert len(await pipe.store.get_chunks(T, "b")) == 2


async def test_reused_embedding_whose_content_never_comes_asks_for_a_reembed(
    pipe: Pipeline,
) -> None:
    """Issue 9, item 1(b): a reuse whose base never reaches this store (a v1 event: no
    base named) waits while deliveries remain, then asks for a re-embed at its version
    instead of failing the job; the re-embedded event records the stage."""
    job = await pipe.job(("a", "upsert"))
    await pipe.send(pipe.embedded(job, "a", 2, chunks=2, reused=True))
    stats = await pipe.run()
    assert stats.retried == pipe.settings.max_deliveries - 1
    assert (stats.dead_lettered, stats.acked) == (0, 1)
    assert await pipe.store.get_document(T, "a") is None
    assert await pipe.persist_mark(job, "a") is None  # left to the re-embedded event
    [(_, request)] = [
        (i, f) for i, f in await pipe.entries(pipe.names.ingest) if b"reembed" in f[b"ce"]
    ]
    command = Envelope.from_fields(request).payload(DocumentReembed)
    assert (command.document_id, command.version, command.requested_by) == (
        "a",
        version_text(2),
        "persist",
    )
    # the embed stage answers with the full embedding at the same version
    await pipe.send(pipe.embedded(job, "a", 2, chunks=2))
    stats = await pipe.run()
    assert (stats.acked, stats.dead_lettered) == (1, 0)
    doc = await pipe.store.get_document(T, "a")
    assert doc is not None and (doc.version, doc.chunk_count) == (2, 2)
    assert await pipe.persist_mark(job, "a") == "done"


async def test_reused_embedding_on_other_stored_content_asks_for_a_reembed_at_once(
    pipe: Pipeline,
) -> None:
    """The store holds the reuse's base version (or newer) with other content: the chunks
    it reuses will never come here, so it asks for a re-embed on the first delivery."""
    job = await pipe.job(("a", "upsert"))
    await pipe.send(pipe.embedded(job, "a", 1, chunks=1, text="B"))
    await pipe.run()
    reuse = DocumentEmbeddedV2.from_v1(pipe.embedded(job, "a", 3, chunks=2, text="A", reused=True))
    await pipe.send(reuse.model_copy(update={"base_version": version_text(1)}))
    stats = await pipe.run()
    assert (stats.acked, stats.retried, stats.dead_lettered) == (1, 0, 0)
    requests = [f for _, f in await pipe.entries(pipe.names.ingest) if b"reembed" in f[b"ce"]]
    assert len(requests) == 1
    doc = await pipe.store.get_document(T, "a")
    assert doc is not None and (doc.version, doc.text) == (1, "B")


async def test_reused_embedding_waits_for_its_full_version(pipe: Pipeline) -> None:
    # the reused event arrives first: it is retried, and applies once v1 is stored
    job = await pipe.job(("a", "upsert"))
    await pipe.send(pipe.embedded(job, "a", 2, chunks=2, metadata={"m": 2}, reused=True))
    handler = PersistHandler(pipe.store, pipe.tracker)
    [outcome] = await handler([message(await pipe.entries())])
    assert isinstance(outcome, Retry)
    await pipe.send(pipe.embedded(job, "a", 1, chunks=2))
    stats = await pipe.run()
    assert stats.dead_lettered == 0
    doc = await pipe.store.get_document(T, "a")
    assert doc is not None
    assert (doc.version, doc.metadata_json, doc.chunk_count) == (2, '{"m": 2}', 2)


async def test_redelivery_changes_nothing(pipe: Pipeline) -> None:
    job = await pipe.job(("a", "upsert"), ("b", "delete"))
    events = (
        pipe.embedded(job, "a", 3, chunks=2),
        DocumentRemoved(job_id=job, document_id="b", version=4),
    )
    await pipe.send(*events)
    sent = await pipe.entries()
    await pipe.run()
    rows = await pipe.pool.fetch("SELECT * FROM documents ORDER BY document_id")
    chunks = await pipe.pool.fetch("SELECT * FROM chunks ORDER BY document_id, idx")
    jobs = await pipe.pool.fetch("SELECT * FROM job_documents ORDER BY document_id")
    # the same events again: an entry redelivered after a lost ack, or an event published
    # twice by a redelivered embed command, is processed like this
    for _, fields in sent:
        await pipe.add(fields)
    stats = await pipe.run()
    assert (stats.acked, stats.dead_lettered, stats.retried) == (2, 0, 0)
    assert await pipe.pool.fetch("SELECT * FROM documents ORDER BY document_id") == rows
    assert await pipe.pool.fetch("SELECT * FROM chunks ORDER BY document_id, idx") == chunks
    assert await pipe.pool.fetch("SELECT * FROM job_documents ORDER BY document_id") == jobs
    status = await pipe.tracker.status(job)
    assert status is not None
    assert (status.done, status.failed) == (0, 0)  # index has not run: persist counted once


async def test_poison_goes_to_the_dead_letter_stream_alone(pipe: Pipeline) -> None:
    job = await pipe.job(("good", "upsert"), ("badvec", "upsert"), ("badidx", "upsert"))
    good = pipe.embedded(job, "good", 1)
    short_vector = pipe.embedded(job, "badvec", 1).model_copy(
        update={
            "chunks": [
                EmbeddedChunk(id="badvec:0", index=0, text="x", vector=encode_vector([1.0]))
            ],
            "chunk_count": 1,
        }
    )
    bad_indexes = pipe.embedded(job, "badidx", 1, chunks=2).model_copy(update={"chunk_count": 3})
    await pipe.send(good, short_vector, bad_indexes)
    await pipe.add(Envelope.wrap("document.surprise.v1", good, source="test", tenant=T).to_fields())
    invalid = msgspec.structs.replace(
        Envelope.wrap(DOCUMENT_EMBEDDED, good, source="test", tenant=T), data=b'{"job_id": "x"}'
    )
    await pipe.add(invalid.to_fields())
    await pipe.add({"not": "an envelope"})
    stats = await pipe.run()
    assert (stats.acked, stats.dead_lettered, stats.retried) == (1, 5, 0)

    dead = await pipe.dlq()
    assert {f[b"dlq_stage"] for f in dead} == {b"persist"}
    assert {f[b"dlq_error_type"] for f in dead} == {b"PoisonMessage"}
    errors = b" | ".join(f[b"dlq_error"] for f in dead)
    assert b"expected dim=384" in errors
    assert b"chunk_count=3" in errors
    assert b"document.surprise.v1" in errors
    assert await pipe.store.get_document(T, "good") is not None
    assert await pipe.store.get_document(T, "badvec") is None
    assert await pipe.persist_mark(job, "good") == "done"
    assert await pipe.persist_mark(job, "badvec") == "failed"
    assert await pipe.persist_mark(job, "badidx") == "failed"


def message(
    entries: Sequence[tuple[bytes, dict[bytes, bytes]]],
) -> Message[Decoded[EmbeddedStreamEvent]]:
    """The last entry as the persist stage's decoder hands it to the handler."""
    entry_id, fields = entries[-1]
    return Message(entry_id.decode(), "s", fields, PERSIST_STAGE.decoder()(fields), 1)


async def test_database_unavailable_means_retry(pipe: Pipeline, schema: str) -> None:
    job = await pipe.job(("a", "upsert"))
    await pipe.send(pipe.embedded(job, "a", 1))
    closed = await create_pg_pool(PostgresSettings(database_url=PG_DSN, database_schema=schema))
    await closed.close()
    handler = PersistHandler(DocumentStore(closed), pipe.tracker)
    outcomes = await handler([message(await pipe.entries())])
    assert [type(o) for o in outcomes] == [Retry]


class RefusesDocument(DocumentStore):
    """A store on which one document id makes PostgreSQL refuse the whole batch."""

    async def write(self, writes: Sequence[DocumentWrite]) -> list[WriteResult]:
        if any(w.document_id == "refused" for w in writes):
            raise asyncpg.CheckViolationError("new row violates check constraint")
        return await super().write(writes)


async def test_a_refused_document_is_dead_lettered_alone(pipe: Pipeline) -> None:
    job = await pipe.job(("a", "upsert"), ("refused", "upsert"))
    await pipe.send(pipe.embedded(job, "a", 1), pipe.embedded(job, "refused", 1))
    entries = await pipe.entries()
    handler = PersistHandler(RefusesDocument(pipe.pool), pipe.tracker)
    outcomes = await handler([message(entries[:1]), message(entries)])
    assert isinstance(outcomes[0], Ack)
    assert isinstance(outcomes[1], DeadLetter)
    assert "CheckViolationError" in str(outcomes[1].error)
    assert await pipe.store.get_document(T, "a") is not None


async def test_run_connects_migrates_consumes_and_closes(
    pipe: Pipeline, schema: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two results-stream entries nobody subscribes to: two hours old, and a minute old
    now_ms = int(time.time() * 1000)
    aged = [f"{now_ms - 7_200_000}-0", f"{now_ms - 60_000}-0"]
    for entry_id in aged:
        await pipe.client.xadd(pipe.names.results, {"n": entry_id}, id=entry_id)
    job = await pipe.job(("a", "upsert"))
    await pipe.send(pipe.embedded(job, "a", 1))
    fresh_schema = schema + "_run"
    settings = Settings()
    settings.redis = RedisSettings(stream_prefix=prefix, results_retention_s=3600)
    settings.postgres = PostgresSettings(database_url=PG_DSN, database_schema=fresh_schema)
    settings.consumer = pipe.settings
    try:
        stats = await asyncio.wait_for(
            run_stage(PERSIST_STAGE, settings, asyncio.Event(), burst=True), 30
        )
        assert stats.acked == 1
        conn = await asyncpg.connect(PG_DSN)
        try:
            version = await conn.fetchval(
                f'SELECT version FROM "{fresh_schema}".documents WHERE document_id = $1', "a"
            )
        finally:
            await conn.close()
        assert version == 1
        # the results stream is kept to its retention: the two-hour-old entry is gone
        kept = [i.decode() for i, _ in await pipe.entries(pipe.names.results)]
        assert aged[0] not in kept
        assert aged[1] in kept
    finally:
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{fresh_schema}" CASCADE')
        await conn.close()


async def test_tenants_persist_the_same_document_id_apart(pipe: Pipeline) -> None:
    """B's delete of A's document id removes B's copy only; B's upsert creates B's own."""
    job_a = await pipe.job(("a", "upsert"), tenant="t-a")
    await pipe.send(pipe.embedded(job_a, "a", 10, 3, text="of a"), tenant="t-a")
    job_b = await pipe.job(("a", "upsert"), tenant="t-b")
    await pipe.send(pipe.embedded(job_b, "a", 20, 1, text="of b"), tenant="t-b")
    job_del = await pipe.job(("a", "delete"), tenant="t-b")
    await pipe.send(DocumentRemoved(job_id=job_del, document_id="a", version=30), tenant="t-b")
    stats = await pipe.run()

    assert (stats.acked, stats.dead_lettered) == (3, 0)
    a, b = await pipe.store.get_document("t-a", "a"), await pipe.store.get_document("t-b", "a")
    assert a is not None and b is not None
    assert (a.version, a.deleted, a.text, a.chunk_count) == (10, False, "of a", 3)
    assert (b.version, b.deleted) == (30, True)
    assert len(await pipe.store.get_chunks("t-a", "a")) == 3
    assert await pipe.store.get_chunks("t-b", "a") == []


async def test_a_terminated_connection_is_transient_one_warning_without_traceback(
    pipe: Pipeline,
) -> None:
    """Issue 9, item 4: after PostgreSQL terminated its connections, asyncpg may raise
    ``InternalClientError: cannot switch to state 15``; that is an outage, retried with
    backoff and logged in one warning line, without a traceback."""
    job = await pipe.job(("a", "upsert"), ("b", "upsert"))
    await pipe.send(pipe.embedded(job, "a", 1), pipe.embedded(job, "b", 2))
    worker = build_persist_worker(pipe.client, pipe.pool, pipe.names, pipe.settings)
    await worker.consumer.ensure_group()
    entries = await worker.consumer.read_new(10, None)

    async def broken_write(writes: Sequence[DocumentWrite]) -> list[WriteResult]:
        raise asyncpg.InternalClientError("cannot switch to state 15; previous state is 2")

    handler = worker.handler
    assert isinstance(handler, PersistHandler)
    handler.store.write = broken_write  # type: ignore[method-assign]
    with capture_logs() as logs:
        await worker._process(entries)

    assert worker.stats.retried == 2 and worker.stats.dead_lettered == 0
    assert not [e for e in logs if e.get("exc_info")], logs
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1, warnings
    assert "cannot switch to state 15" in warnings[0]["error"]
    assert warnings[0]["messages"] == 2
