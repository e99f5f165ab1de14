"""The index worker on the real Redis and a real Chroma (PersistentClient in tmp_path,
and once a ``chroma run`` server): ids and metadata, shrink, delete, per-document order
across versions, batches and replicas, model mismatch, reused embeddings, poison,
busy locks and a cosine query.

Events are produced here directly on ``{prefix}:embedded``; jobs are submitted with
``JobTracker.submit`` so the index stage marks are checked too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
import redis.asyncio as redis
from chromadb.config import Settings as ChromaClientSettings
from pydantic import BaseModel
from redis.exceptions import ResponseError
from structlog.testing import capture_logs

from embedstream.adapters.chroma import chunks as chroma_chunks
from embedstream.adapters.chroma import collection as chroma_collection
from embedstream.adapters.chroma.index import ChromaIndex
from embedstream.adapters.chroma.writes import IndexWrite
from embedstream.config import ChromaSettings, ConsumerSettings, Settings
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.commands import (
    DOCUMENT_REEMBED,
    DocumentReembed,
    MetadataValue,
)
from embedstream.schemas.envelope import Envelope, attributes_of
from embedstream.schemas.events import (
    DOCUMENT_EMBEDDED,
    DOCUMENT_REMOVED,
    DocumentEmbedded,
    DocumentEmbeddedV2,
    DocumentRemoved,
    EmbeddedChunk,
)
from embedstream.schemas.tenancy import chunk_id
from embedstream.schemas.vectors import decode_vector, encode_vector
from embedstream.schemas.versions import version_text
from embedstream.streams.names import INDEX, StreamNames
from embedstream.streams.runner import RunStats
from embedstream.workers import index as index_worker
from embedstream.workers.index import INDEX_STAGE, build_index_worker
from embedstream.workers.stage import run_stage
from tests.conftest import REDIS_URL
from tests.support.builders import (
    DIM,
    MODEL,
    TENANT,
    Kind,
    embedded_event,
    removed_event,
    submit_job,
    unit_vector,
)
from tests.support.builders import publish as publish_events
from tests.support.chroma_server import chroma_server as start_chroma_server
from tests.support.redis_server import PrivateRedis
from tests.support.streams import wait_until

pytestmark = pytest.mark.integration

COLLECTION = "test-index"


# -- helpers -----------------------------------------------------------------------


def embedded(
    job_id: str,
    document_id: str,
    version: int,
    texts: Sequence[str] = ("alpha", "beta"),
    **options: Any,
) -> DocumentEmbedded:
    return embedded_event(job_id, document_id, version, texts, **options)


def reused(
    job_id: str,
    document_id: str,
    version: int,
    texts: Sequence[str],
    metadata: dict[str, MetadataValue] | None = None,
) -> DocumentEmbedded:
    return embedded(job_id, document_id, version, texts, metadata=metadata, reused=True)


async def publish(
    client: redis.Redis, names: StreamNames, *events: BaseModel, tenant: str = TENANT
) -> None:
    await publish_events(client, names.embedded, *events, tenant=tenant)


async def ingest_commands(client: redis.Redis, names: StreamNames) -> list[Envelope]:
    """The re-embed requests on the ingest stream."""
    commands = [Envelope.from_fields(fields) for _, fields in await client.xrange(names.ingest)]
    return [c for c in commands if c.type == DOCUMENT_REEMBED]


async def submit(
    tracker: JobTracker, job_id: str, docs: dict[str, Kind], tenant: str = TENANT
) -> None:
    """A job with ``docs``: document id -> "upsert" | "delete"."""
    await submit_job(tracker, docs, job_id=job_id, tenant=tenant, text="x")


async def dead_letters(client: redis.Redis, names: StreamNames) -> list[dict[bytes, bytes]]:
    rows: Any = await client.xrange(names.dlq)
    return [dict(fields) for _, fields in rows]


async def index_stage(tracker: JobTracker, job_id: str) -> dict[str, str | None]:
    status = await tracker.status(job_id)
    assert status is not None
    return {item.document_id: item.stages.get("index") for item in status.items}


def records(
    index: ChromaIndex, document_id: str | None = None, tenant: str = TENANT
) -> dict[str, Any]:
    """One tenant's chunks straight from the collection: chunk id without its
    ``{tenant}/`` prefix -> {"metadata", "embedding", "document"}."""
    where: Any = {"tenant": tenant}
    if document_id:
        where = {"$and": [where, {"document_id": document_id}]}
    reply: Any = index.collection.get(where=where, include=["metadatas", "embeddings", "documents"])
    embeddings = reply["embeddings"] if reply["embeddings"] is not None else []
    assert all(rid.startswith(f"{tenant}/") for rid in reply["ids"])
    return {
        rid.removeprefix(f"{tenant}/"): {
            "metadata": meta,
            "embedding": np.asarray(emb),
            "document": doc,
        }
        for rid, meta, emb, doc in zip(
            reply["ids"],
            reply["metadatas"] or [],
            embeddings,
            reply["documents"] or [None for _ in reply["ids"]],
            strict=True,
        )
    }


async def run_worker(
    client: redis.Redis,
    names: StreamNames,
    cfg: ConsumerSettings,
    index: ChromaIndex,
    **kwargs: Any,
) -> RunStats:
    worker = build_index_worker(client, names, cfg, index, **kwargs)
    return await asyncio.wait_for(worker.run(burst=True), 60)


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[ChromaIndex]:
    settings = ChromaSettings(
        chroma_path=tmp_path / "chroma", chroma_url=None, chroma_collection=COLLECTION
    )
    idx = ChromaIndex(settings)
    await idx.open()
    yield idx
    idx.close()


# -- writes ------------------------------------------------------------------------


@pytest.mark.parametrize("store_documents", [False, True])
async def test_chunks_land_with_ids_and_metadata(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
    tracker: JobTracker,
    store_documents: bool,
) -> None:
    await submit(tracker, "j1", {"doc-a": "upsert", "doc-b": "upsert"})
    a = embedded("j1", "doc-a", 10, ("one", "two", "three"), metadata={"lang": "en", "n": 3})
    b = embedded("j1", "doc-b", 11, ("solo",))
    await publish(redis_client, names, a, b)

    stats = await run_worker(
        redis_client, names, fast_settings, index, store_documents=store_documents
    )

    assert (stats.acked, stats.dead_lettered, stats.retried) == (2, 0, 0)
    stored = records(index)
    assert set(stored) == {"doc-a:0", "doc-a:1", "doc-a:2", "doc-b:0"}
    assert stored["doc-a:1"]["metadata"] == {
        "lang": "en",
        "n": 3,
        "tenant": TENANT,
        "document_id": "doc-a",
        "chunk_index": 1,
        "version": 10,
        "job_id": "j1",
        "content_hash": a.content_hash,
    }
    for chunk in a.chunks:
        got = stored[f"doc-a:{chunk.index}"]
        expected = decode_vector(chunk.vector, DIM)
        np.testing.assert_allclose(got["embedding"], expected, rtol=1e-6)
        assert got["document"] == (chunk.text if store_documents else None)
    assert await index_stage(tracker, "j1") == {"doc-a": "done", "doc-b": "done"}
    assert index.collection.metadata == {"embedding_model": MODEL, "embedding_dim": DIM}
    assert await redis_client.hgetall(names.key("index", "versions")) == {
        b"acme/doc-a": b"10",
        b"acme/doc-b": b"11",
    }


async def test_shrinking_document_loses_surplus_chunks(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
    tracker: JobTracker,
) -> None:
    await publish(redis_client, names, embedded("j1", "d", 1, ("a", "b", "c", "d")))
    await run_worker(redis_client, names, fast_settings, index)
    assert len(records(index, "d")) == 4

    await publish(redis_client, names, embedded("j2", "d", 2, ("a2", "b2")))
    await run_worker(redis_client, names, fast_settings, index)

    stored = records(index, "d")
    assert set(stored) == {"d:0", "d:1"}
    assert {r["metadata"]["version"] for r in stored.values()} == {2}


async def test_removal_deletes_every_chunk_and_only_that_document(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
    tracker: JobTracker,
) -> None:
    await publish(
        redis_client,
        names,
        embedded("j1", "gone", 1, ("a", "b", "c")),
        embedded("j1", "kept", 2, ("k",)),
    )
    await run_worker(redis_client, names, fast_settings, index)
    await submit(tracker, "j2", {"gone": "delete"})
    await publish(redis_client, names, removed_event("j2", "gone", 3))

    stats = await run_worker(redis_client, names, fast_settings, index)

    assert stats.acked == 1
    assert set(records(index)) == {"kept:0"}
    assert await index_stage(tracker, "j2") == {"gone": "done"}
    tombstone = await redis_client.hget(names.key("index", "versions"), "acme/gone")
    assert tombstone == b"3"


# -- order -------------------------------------------------------------------------


async def test_older_versions_are_refused_after_newer_ones(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
    tracker: JobTracker,
) -> None:
    await publish(
        redis_client,
        names,
        embedded("j2", "d", 20, ("new",)),
        removed_event("j3", "e", 30),
    )
    await run_worker(redis_client, names, fast_settings, index)

    # the older upsert of d, and an upsert of e older than e's delete, arrive late
    await submit(tracker, "j1", {"d": "upsert", "e": "upsert"})
    await publish(
        redis_client,
        names,
        embedded("j1", "d", 10, ("old", "older")),
        embedded("j1", "e", 29, ("resurrected",)),
    )
    stats = await run_worker(redis_client, names, fast_settings, index)

    assert (stats.acked, stats.dead_lettered) == (2, 0)  # acknowledged as superseded
    stored = records(index)
    assert set(stored) == {"d:0"}
    assert stored["d:0"]["metadata"]["version"] == 20
    assert await index_stage(tracker, "j1") == {"d": "done", "e": "done"}
    versions = await redis_client.hgetall(names.key("index", "versions"))
    assert versions == {b"acme/d": b"20", b"acme/e": b"30"}


async def test_one_batch_applies_only_the_newest_version(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
    tracker: JobTracker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[list[IndexWrite]] = []
    original = ChromaIndex.apply

    async def spy(self: ChromaIndex, batch: Sequence[IndexWrite]) -> dict[str, Exception]:
        writes.append(list(batch))
        return await original(self, batch)

    monkeypatch.setattr(ChromaIndex, "apply", spy)
    await publish(
        redis_client,
        names,
        embedded("j1", "d", 3, ("three",)),
        embedded("j1", "d", 1, ("one", "one")),
        removed_event("j1", "x", 5),
        embedded("j1", "d", 2, ("two", "two", "two")),
        embedded("j1", "x", 4, ("x",)),
    )
    stats = await run_worker(redis_client, names, fast_settings, index)

    assert (stats.batches, stats.acked) == (1, 5)
    assert len(writes) == 1  # every document of the batch in one apply
    assert sorted(type(w).__name__ for w in writes[0]) == ["RemoveDocument", "ReplaceDocument"]
    stored = records(index)
    assert set(stored) == {"d:0"}
    assert stored["d:0"]["metadata"]["version"] == 3


async def test_replicas_apply_each_document_in_version_order(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    applied: list[tuple[str, int]] = []
    original = ChromaIndex.apply

    async def slow_apply(self: ChromaIndex, batch: Sequence[IndexWrite]) -> dict[str, Exception]:
        await asyncio.sleep(0.01)
        result = await original(self, batch)
        for write in batch:
            if write.document_id not in result:
                applied.append((write.document_id, versions_of[id(write)]))
        return result

    # remember each write's version via the plans the handler builds
    versions_of: dict[int, int] = {}
    original_plan = index_worker.plan_write

    def plan_write(document: Any, **options: Any) -> IndexWrite:
        write = original_plan(document, **options)
        versions_of[id(write)] = document.latest.version
        return write

    monkeypatch.setattr(ChromaIndex, "apply", slow_apply)
    monkeypatch.setattr(index_worker, "plan_write", plan_write)

    docs = ["p", "q", "r"]
    events: list[DocumentEmbedded | DocumentRemoved] = []
    for version in range(1, 61):
        doc = docs[version % 3]
        if version % 7 == 0:
            events.append(removed_event("j", doc, version))
        else:
            events.append(embedded("j", doc, version, [f"{doc}{version}"] * (1 + version % 4)))
    await publish(redis_client, names, *events)

    cfg = ChromaSettings(chroma_path=tmp_path / "c", chroma_url=None, chroma_collection=COLLECTION)
    replicas = [ChromaIndex(cfg), ChromaIndex(cfg)]
    for replica in replicas:
        await replica.open()
    try:
        runs = [
            run_worker(
                redis_client,
                names,
                fast_settings.model_copy(
                    # a visibility timeout well above the batch time keeps the runner's
                    # lease renewal out of the way (see the report on its cancel handling)
                    update={
                        "consumer_name": f"r{n}",
                        "batch_size": 4,
                        "visibility_timeout_ms": 5_000,
                    }
                ),
                replica,
            )
            for n, replica in enumerate(replicas)
        ]
        stats = await asyncio.gather(*runs)
        assert sum(s.acked for s in stats) == 60
        assert sum(s.dead_lettered for s in stats) == 0

        for doc in docs:
            versions = [v for d, v in applied if d == doc]
            assert versions == sorted(versions), f"{doc} went backwards: {versions}"
            newest = max(e.version for e in events if e.document_id == doc)
            stored = records(replicas[0], doc)
            assert {r["metadata"]["version"] for r in stored.values()} == {newest}
    finally:
        for replica in replicas:
            replica.close()


async def test_busy_document_lock_is_retried_then_written(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
) -> None:
    await redis_client.set(names.key("index", "lock", "acme/d"), "someone-else", px=100)
    await publish(redis_client, names, embedded("j", "d", 1, ("a",)))
    cfg = fast_settings.model_copy(update={"max_deliveries": 10})

    stats = await run_worker(redis_client, names, cfg, index, lock_wait_s=0.01)

    assert stats.retried >= 1
    assert (stats.acked, stats.dead_lettered) == (1, 0)
    assert set(records(index)) == {"d:0"}
    assert await redis_client.get(names.key("index", "lock", "acme/d")) is None


# -- model, reuse, poison ----------------------------------------------------------


async def test_other_model_is_dead_lettered(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
    tracker: JobTracker,
) -> None:
    await publish(redis_client, names, embedded("j1", "d", 1, ("a",)))
    await run_worker(redis_client, names, fast_settings, index)
    await submit(tracker, "j2", {"e": "upsert"})
    await publish(redis_client, names, embedded("j2", "e", 2, ("b",), model="other-model", dim=4))

    stats = await run_worker(redis_client, names, fast_settings, index)

    assert (stats.acked, stats.dead_lettered) == (0, 1)
    [fields] = await dead_letters(redis_client, names)
    error = fields[b"dlq_error"].decode()
    for needed in ("test-model", "other-model", "EMBEDSTREAM_CHROMA_COLLECTION", "reindex"):
        assert needed in error
    assert fields[b"dlq_stage"] == b"index"
    assert attributes_of(fields)["type"] == DOCUMENT_EMBEDDED
    assert DocumentEmbedded.model_validate_json(fields[b"data"]).document_id == "e"
    assert await index_stage(tracker, "j2") == {"e": "failed"}
    assert set(records(index)) == {"d:0"}


async def test_reused_embedding_updates_metadata_only(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
    tracker: JobTracker,
) -> None:
    texts = ("same", "text")
    await publish(
        redis_client, names, embedded("j1", "d", 1, texts, metadata={"lang": "en", "old": 1})
    )
    await run_worker(redis_client, names, fast_settings, index, store_documents=True)
    before = records(index, "d")

    await submit(tracker, "j2", {"d": "upsert"})
    await publish(redis_client, names, reused("j2", "d", 2, texts, metadata={"lang": "fr"}))
    stats = await run_worker(redis_client, names, fast_settings, index, store_documents=True)

    assert (stats.acked, stats.retried) == (1, 0)
    after = records(index, "d")
    assert set(after) == set(before) == {"d:0", "d:1"}
    for rid in after:
        np.testing.assert_array_equal(after[rid]["embedding"], before[rid]["embedding"])
        assert after[rid]["document"] == before[rid]["document"]
        meta = after[rid]["metadata"]
        assert meta["lang"] == "fr"
        assert "old" not in meta
        assert (meta["version"], meta["job_id"]) == (2, "j2")
    assert await index_stage(tracker, "j2") == {"d": "done"}


async def test_reused_embedding_waits_for_its_base(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
) -> None:
    """A reuse read before the embedding it reuses is retried until that one is indexed."""
    texts = ("same",)
    await publish(redis_client, names, reused("j2", "late", 2, texts, {"tag": "v2"}))
    cfg = fast_settings.model_copy(update={"max_deliveries": 50})
    worker = asyncio.create_task(run_worker(redis_client, names, cfg, index))

    async def retried() -> bool:
        try:
            rows = await redis_client.xpending_range(names.embedded, INDEX.group, "-", "+", 1)
        except ResponseError:  # the group is not there yet
            return False
        return bool(rows) and int(rows[0]["times_delivered"]) >= 2

    await wait_until(retried, what="the reuse to be retried")
    await publish(redis_client, names, embedded("j1", "late", 1, texts, metadata={"tag": "v1"}))
    stats = await worker

    assert (stats.acked, stats.dead_lettered) == (2, 0)
    assert stats.retried >= 1
    [meta] = [r["metadata"] for r in records(index, "late").values()]
    assert (meta["tag"], meta["version"], meta["job_id"]) == ("v2", 2, "j2")


async def test_reused_embedding_folds_onto_its_base_in_one_batch(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
) -> None:
    texts = ("same", "words")
    base = embedded("j1", "fold", 1, texts, metadata={"tag": "v1"})
    await publish(redis_client, names, base, reused("j2", "fold", 2, texts, {"tag": "v2"}))

    stats = await run_worker(redis_client, names, fast_settings, index)

    assert (stats.batches, stats.acked, stats.retried) == (1, 2, 0)
    stored = records(index, "fold")
    assert {(r["metadata"]["tag"], r["metadata"]["version"]) for r in stored.values()} == {
        ("v2", 2)
    }
    np.testing.assert_allclose(
        stored["fold:1"]["embedding"], decode_vector(base.chunks[1].vector, DIM), rtol=1e-6
    )


async def test_reuse_of_other_content_is_not_applied_to_old_chunks(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
) -> None:
    """v1 (text A) is indexed, v2 (text B) never reaches this store, v3 reuses B: v3 must
    not relabel A's chunks as the current version; once no delivery is left it asks for a
    re-embed at v3 instead of failing (issue 9, item 1(b))."""
    await publish(redis_client, names, embedded("j1", "d", 1, ("A",)))
    await run_worker(redis_client, names, fast_settings, index)
    await publish(redis_client, names, reused("j3", "d", 3, ("B",)))
    cfg = fast_settings.model_copy(update={"max_deliveries": 2})

    stats = await run_worker(redis_client, names, cfg, index)

    assert (stats.dead_lettered, stats.retried, stats.acked) == (0, 1, 1)
    [meta] = [r["metadata"] for r in records(index, "d").values()]
    assert meta["version"] == 1
    assert [env.type for env in await ingest_commands(redis_client, names)] == [DOCUMENT_REEMBED]


async def test_reuse_whose_base_was_indexed_with_other_content_reembeds_at_once(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
    tracker: JobTracker,
) -> None:
    """The register holds the reuse's base version but Chroma lacks its chunks (the
    collection was lost or rebuilt without them): waiting cannot help, so the first
    delivery asks for a re-embed; the index mark is left to the re-embedded event."""
    await submit(tracker, "j2", {"d": "upsert"})
    await publish(redis_client, names, embedded("j1", "d", 1, ("A",)))
    await run_worker(redis_client, names, fast_settings, index)
    index.collection.delete(ids=[f"{TENANT}/d:0"])  # the chunks are gone
    reuse = DocumentEmbeddedV2.from_v1(reused("j2", "d", 2, ("A",)))
    await publish(redis_client, names, reuse.model_copy(update={"base_version": version_text(1)}))

    stats = await run_worker(redis_client, names, fast_settings, index)

    assert (stats.acked, stats.retried, stats.dead_lettered) == (1, 0, 0)
    [request] = await ingest_commands(redis_client, names)
    command = request.payload(DocumentReembed)
    assert (command.document_id, command.version, command.requested_by) == (
        "d",
        version_text(2),
        "index",
    )
    assert request.tenant == TENANT
    assert await index_stage(tracker, "j2") == {"d": None}


async def test_poison_is_dead_lettered_alone(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
) -> None:
    good = embedded("j", "good", 1, ("fine",))
    bad_vector = embedded("j", "bad", 2, ("x",)).model_copy(
        update={
            "chunks": [EmbeddedChunk(id="bad:0", index=0, text="x", vector=encode_vector([1.0]))]
        }
    )
    wrong_count = embedded("j", "short", 3, ("x",)).model_copy(update={"chunk_count": 2})
    await publish(redis_client, names, good, bad_vector, wrong_count)
    unknown = Envelope.wrap(
        "document.surprise.v1", good, source="tests", tenant=TENANT, subject="good"
    )
    await redis_client.xadd(names.embedded, unknown.to_fields())  # type: ignore[arg-type]
    invalid = Envelope.wrap(DOCUMENT_REMOVED, good, source="tests", tenant=TENANT, subject="good")
    await redis_client.xadd(names.embedded, invalid.to_fields())  # type: ignore[arg-type]

    stats = await run_worker(redis_client, names, fast_settings, index)

    assert (stats.acked, stats.dead_lettered, stats.retried) == (1, 4, 0)
    errors = [f[b"dlq_error_type"] for f in await dead_letters(redis_client, names)]
    assert errors == [b"PoisonMessage"] * 4
    assert set(records(index)) == {"good:0"}


async def test_query_by_embedding_finds_the_document_by_cosine(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
) -> None:
    basis = np.eye(DIM, dtype=np.float32)
    events = [
        embedded("j", f"doc-{n}", n + 1, (f"text {n}",), vectors=[basis[n]]) for n in range(DIM)
    ]
    await publish(redis_client, names, *events)
    await run_worker(redis_client, names, fast_settings, index)

    # far from doc-5 in L2 (length 10) but pointing the same way: cosine finds doc-5
    query = basis[5] * 10 + 0.5 * basis[2]
    reply = index.collection.query(query_embeddings=[query], n_results=2, include=["metadatas"])
    metadatas = reply["metadatas"]
    assert metadatas is not None
    assert [m["document_id"] for m in metadatas[0]] == ["doc-5", "doc-2"]
    assert chroma_collection.SPACE == "cosine"
    config: Any = index.collection.configuration
    assert config["hnsw"]["space"] == "cosine"


# -- server mode -------------------------------------------------------------------


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[str]:
    with start_chroma_server(tmp_path / "server") as url:
        yield url


async def test_run_against_a_chroma_server(
    redis_client: redis.Redis,
    names: StreamNames,
    prefix: str,
    chroma_server: str,
    tracker: JobTracker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {
        "EMBEDSTREAM_REDIS_URL": REDIS_URL,
        "EMBEDSTREAM_STREAM_PREFIX": prefix,
        "EMBEDSTREAM_CHROMA_URL": chroma_server,
        "EMBEDSTREAM_CHROMA_COLLECTION": "server-test",
        "EMBEDSTREAM_CONSUMER_NAME": "server-c1",
    }.items():
        monkeypatch.setenv(key, value)
    await submit(tracker, "j1", {"a": "upsert", "b": "delete"})
    await publish(
        redis_client,
        names,
        embedded("j0", "b", 1, ("to", "delete")),
        embedded("j1", "a", 2, ("hello", "server"), metadata={"k": "v"}),
        removed_event("j1", "b", 3),
    )

    stats = await asyncio.wait_for(
        run_stage(INDEX_STAGE, Settings(), asyncio.Event(), burst=True), 60
    )

    assert (stats.acked, stats.dead_lettered) == (3, 0)
    host, port = chroma_server.removeprefix("http://").split(":")
    client = chromadb.HttpClient(
        host=host, port=int(port), settings=ChromaClientSettings(anonymized_telemetry=False)
    )
    collection = client.get_collection("server-test", embedding_function=None)
    got = collection.get(include=["metadatas"])
    assert sorted(got["ids"]) == ["acme/a:0", "acme/a:1"]
    assert got["metadatas"] is not None
    assert {m["k"] for m in got["metadatas"]} == {"v"}
    assert collection.metadata == {"embedding_model": MODEL, "embedding_dim": DIM}
    assert await index_stage(tracker, "j1") == {"a": "done", "b": "done"}
    pending = await redis_client.xpending(names.embedded, INDEX.group)
    assert pending["pending"] == 0


def test_adapter_functions_rebuild_a_collection(tmp_path: Path) -> None:
    """What `embedstream reindex` uses: upsert_chunks and delete_documents, synchronously."""
    client = chroma_collection.create_client(
        ChromaSettings(chroma_path=tmp_path / "c", chroma_url=None)
    )
    collection = chroma_collection.open_collection(client, "rebuild")
    chroma_collection.bind_model(client, "rebuild", MODEL, DIM)
    chunks = [
        chroma_chunks.ChunkRecord(
            id=chunk_id(tenant, doc, n),
            embedding=unit_vector(DIM),
            metadata=chroma_chunks.chunk_metadata(
                {},
                tenant=tenant,
                document_id=doc,
                index=n,
                version=1,
                job_id="j",
                content_hash="h",
            ),
        )
        for tenant in ("t1", "t2")
        for doc in ("a", "b")
        for n in range(3)
    ]
    assert chroma_chunks.upsert_chunks(collection, chunks, batch_size=4) == 12
    assert chroma_chunks.delete_documents(collection, "t1", ["a", "missing"]) == 3
    assert sorted(collection.get()["ids"]) == [
        "t1/b:0",
        "t1/b:1",
        "t1/b:2",
        *(f"t2/{doc}:{n}" for doc in "ab" for n in range(3)),
    ]
    with pytest.raises(chroma_collection.ModelMismatch, match="other"):
        chroma_collection.bind_model(client, "rebuild", "other", DIM)


async def test_tenants_index_the_same_document_id_apart(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    index: ChromaIndex,
    tracker: JobTracker,
) -> None:
    """Two tenants' "d" coexist; versions and deletes are per tenant: t-b's delete (with a
    version newer than t-a's) removes only t-b's chunks, and t-a's older versions are
    still applied after it."""
    await submit(tracker, "ja", {"d": "upsert"}, tenant="t-a")
    await submit(tracker, "jb", {"d": "upsert"}, tenant="t-b")
    await publish(redis_client, names, embedded("ja", "d", 10, ("a0", "a1")), tenant="t-a")
    await publish(redis_client, names, embedded("jb", "d", 20, ("b0",)), tenant="t-b")
    await run_worker(redis_client, names, fast_settings, index)
    assert set(records(index, tenant="t-a")) == {"d:0", "d:1"}
    assert set(records(index, tenant="t-b")) == {"d:0"}
    assert records(index, "d", tenant="t-b")["d:0"]["metadata"]["version"] == 20

    await submit(tracker, "jb2", {"d": "delete"}, tenant="t-b")
    await publish(redis_client, names, removed_event("jb2", "d", 30), tenant="t-b")
    await submit(tracker, "ja2", {"d": "upsert"}, tenant="t-a")
    await publish(redis_client, names, embedded("ja2", "d", 15, ("a-new",)), tenant="t-a")
    stats = await run_worker(redis_client, names, fast_settings, index)

    assert (stats.acked, stats.dead_lettered) == (2, 0)
    assert records(index, tenant="t-b") == {}
    a = records(index, tenant="t-a")
    assert set(a) == {"d:0"}
    assert a["d:0"]["metadata"]["version"] == 15
    assert await redis_client.hgetall(names.key("index", "versions")) == {
        b"t-a/d": b"15",
        b"t-b/d": b"30",
    }


# -- transient faults ----------------------------------------------------------------


async def test_a_redis_outage_under_a_batch_is_one_warning_without_traceback(
    tmp_path: Path, names: StreamNames, fast_settings: ConsumerSettings, index: ChromaIndex
) -> None:
    """Issue 9, item 4: Redis goes away while the index worker holds a batch (its
    document locks live in Redis): the batch is retried with backoff and logged as one
    warning line, not as a crash with a traceback."""
    server = PrivateRedis(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    await server.start()
    client = redis.Redis.from_url(server.url, socket_timeout=2)
    try:
        await publish(client, names, embedded("j", "a", 1), embedded("j", "b", 2))
        worker = build_index_worker(client, names, fast_settings, index)
        await worker.consumer.ensure_group()
        entries = await worker.consumer.read_new(10, None)
        assert len(entries) == 2
        await server.stop()
        with capture_logs() as logs:
            await worker._process(entries)
    finally:
        await client.aclose()
        await server.stop()

    assert worker.stats.retried == 2
    assert not [e for e in logs if e.get("exc_info")], logs
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["messages"] == 2
    assert "ConnectionError" in warnings[0]["error_type"]
