"""Both stores or neither (issue 10, item 9): a ``document.embedded`` event that either
store would refuse (written by a producer other than the ingress, which refuses it with
422) is dead-lettered by the index stage and the persist stage alike, so Chroma never
keeps a document PostgreSQL (the system of record) does not have, or the other way
round. Real Redis, PostgreSQL and Chroma; both workers consume the same stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
import redis.asyncio as redis

from embedstream.adapters.chroma.index import ChromaIndex
from embedstream.config import ChromaSettings, ConsumerSettings
from embedstream.jobs.tracker import JobTracker, Submission
from embedstream.schemas.commands import DOCUMENT_UPSERT, DocumentUpsert
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import DOCUMENT_EMBEDDED, DocumentEmbedded, EmbeddedChunk
from embedstream.schemas.vectors import encode_vector
from embedstream.streams.names import INDEX, PERSIST, StreamNames
from embedstream.workers.index import build_index_worker
from embedstream.workers.persist import build_persist_worker

pytestmark = pytest.mark.integration

DIM = 8
TENANT = "acme"
JOB = "0b9f6e0e-8d0c-4c39-9a55-3b7f0c1d2e3f"

# (document id, change to the event's JSON): each is something one store refuses
UNSTORABLE: dict[str, dict[str, Any]] = {
    "nul-in-metadata": {"metadata": {"note": "a\x00b"}},  # PostgreSQL jsonb refuses
    "nul-in-metadata-key": {"metadata": {"a\x00b": 1}},  # PostgreSQL jsonb refuses
    "nul-in-text": {"text": "a\x00b"},  # PostgreSQL text refuses
    "chroma-key": {"metadata": {"chroma:document": "x"}},  # Chroma refuses
    "dollar-key": {"metadata": {"$x": 1}},  # Chroma refuses
    "huge-version": {"version": 2**63},  # PostgreSQL bigint refuses
}


def event(document_id: str, **change: Any) -> dict[bytes, bytes]:
    vector = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    valid = DocumentEmbedded(
        job_id=JOB,
        document_id=document_id,
        version=1,
        content_hash="h",
        model="test-model",
        dim=DIM,
        text="alpha",
        chunk_count=1,
        chunks=[EmbeddedChunk(id="-", index=0, text="alpha", vector=encode_vector(vector))],
    )
    envelope = Envelope.wrap(
        DOCUMENT_EMBEDDED, valid, source="tests", tenant=TENANT, subject=document_id
    )
    data = {**valid.model_dump(mode="json"), **change}
    fields = envelope.to_fields()
    fields["data"] = json.dumps(data)  # as a producer without our models would write it
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[ChromaIndex]:
    idx = ChromaIndex(
        ChromaSettings(chroma_path=tmp_path / "chroma", chroma_url=None, chroma_collection="agree")
    )
    await idx.open()
    yield idx
    idx.close()


async def test_a_document_either_store_refuses_reaches_neither(
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
    pool: asyncpg.Pool,
    index: ChromaIndex,
) -> None:
    documents = ["good", *UNSTORABLE]
    submissions = [
        Submission(
            doc,
            "upsert",
            Envelope.wrap(
                DOCUMENT_UPSERT,
                DocumentUpsert(job_id=JOB, document_id=doc, text="alpha"),
                source="tests",
                tenant=TENANT,
            ),
        )
        for doc in documents
    ]
    tracker = JobTracker(redis_client, names)
    await tracker.submit(JOB, submissions, tenant=TENANT)
    await redis_client.xadd(names.embedded, event("good"))  # type: ignore[arg-type]
    for doc, change in UNSTORABLE.items():
        await redis_client.xadd(names.embedded, event(doc, **change))  # type: ignore[arg-type]

    # both groups exist before either runs: a stage trims what every group has read
    for group in (INDEX.group, PERSIST.group):
        await redis_client.xgroup_create(names.embedded, group, id="0")
    indexed = await asyncio.wait_for(
        build_index_worker(redis_client, names, fast_settings, index).run(burst=True), 60
    )
    persisted = await asyncio.wait_for(
        build_persist_worker(redis_client, pool, names, fast_settings).run(burst=True), 60
    )

    assert (indexed.acked, indexed.dead_lettered) == (1, len(UNSTORABLE))
    assert (persisted.acked, persisted.dead_lettered) == (1, len(UNSTORABLE))
    in_chroma: Any = index.collection.get(where={"tenant": TENANT}, include=["metadatas"])
    assert {m["document_id"] for m in in_chroma["metadatas"]} == {"good"}
    in_postgres = {r["document_id"] for r in await pool.fetch("SELECT document_id FROM documents")}
    assert in_postgres == {"good"}
    status = await tracker.status(JOB)
    assert status is not None and status.state == "failed"
    failed = {d.document_id: d.error for d in status.items if d.state == "failed"}
    assert set(failed) == set(UNSTORABLE)
    assert all(
        e
        == {
            "stage": e["stage"],
            "error": "invalid_message: the message is malformed or failed validation",
        }
        for e in failed.values()
        if e is not None
    )
