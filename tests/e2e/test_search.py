"""Search and document reads through the real pipeline: documents posted to the API,
embedded, indexed in a Chroma server and persisted in PostgreSQL by the worker
processes, then searched over HTTP (and with ``embedstream search``).

- every operator of ``where`` and ``where_document`` returns exactly the matching chunks,
  in both modes (the expected set comes from ``tests.support.filter_reference`` over the
  posted metadata and the stored chunk texts);
- a ``where`` that names another tenant is refused, and nothing of another tenant (with
  the same texts and metadata) is ever returned;
- a rare identifier in one chunk ranks that chunk first in hybrid mode;
- the API's query vector is the embed worker's for the same text (cosine >= 0.99999).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from bench.corpus import generate
from bench.stack import Stack, create_stack, remove_stack_data

from tests.e2e.conftest import PG_DSN, REDIS_URL
from tests.e2e.stores import wait_for_results
from tests.support.filter_reference import matches_text, matches_where

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RARE = "XQ7731"
DOCS: dict[str, tuple[str, dict[str, Any]]] = {
    "redis/streams": (
        "Redis Streams keep an append-only log of entries; consumer groups share the work "
        "of reading them.",
        {"topic": "redis", "year": 2021, "score": 4.5, "public": True, "lang": "en"},
    ),
    "redis/claim": (
        "XAUTOCLAIM moves entries that stayed pending too long to a live consumer.",
        {"topic": "redis", "year": 2023, "score": 3, "public": False},
    ),
    "pg/fts": (
        "PostgreSQL full-text search turns text into tsvector lexemes and matches tsquery "
        "expressions.",
        {"topic": "postgres", "year": 2019, "score": 4.0, "lang": "en"},
    ),
    "pg/gin": (
        "GIN indexes make containment queries on jsonb and tsvector columns fast.",
        {"topic": "postgres", "year": 2022, "public": True, "lang": "de"},
    ),
    "chroma": (
        "Chroma stores embeddings with metadata and answers nearest-neighbour queries with "
        "filters.",
        {"topic": "chroma", "year": 2024, "score": 2.5, "public": True},
    ),
    "ops/incident": (
        f"The nightly deploy failed with error {RARE} when the cache warmed up; rolling back "
        "fixed it.",
        {"topic": "ops", "year": 2024, "score": 1},
    ),
    "ops/retries": (
        "Deploys fail when an error is not retried: retry with backoff and log every error "
        "code you see.",
        {"topic": "ops", "year": 2023},
    ),
    "ops/codes": (
        "Error codes of the billing service start with BX and are listed in the runbook "
        "with what each error means.",
        {"topic": "ops", "year": 2022, "score": 5},
    ),
    "ops/errors": (
        "What does an error code mean? Look it up in the error catalogue before you page "
        "anyone about the error.",
        {"topic": "ops", "year": 2021, "score": 2},
    ),
    "k8s/keda": (
        "KEDA scales a deployment to zero when the stream lag stays at zero.",
        {"topic": "k8s", "year": 2024, "score": 3.5, "lang": "en"},
    ),
    "misc/types": (
        "A document whose metadata holds a year as text and a score as a boolean.",
        {"topic": "misc", "year": "2021", "score": True},
    ),
    "python/long": (
        "\n\n".join(generate(1, seed=11, min_words=500, max_words=600)),
        {"topic": "python", "year": 2020, "score": 3.5},
    ),
}
# another tenant with the same texts and metadata (and the rare identifier)
GLOBEX = {f"g/{doc_id}": value for doc_id, value in DOCS.items() if doc_id != "python/long"}

WHERE_CASES: list[dict[str, Any] | None] = [
    None,
    {"topic": "redis"},
    {"topic": {"$eq": "postgres"}},
    {"topic": {"$ne": "redis"}},
    {"year": {"$gt": 2022}},
    {"year": {"$gte": 2023}},
    {"year": {"$lt": 2021}},
    {"year": {"$lte": 2021}},
    {"score": {"$gt": 2.5}},
    {"score": {"$lte": 3.5}},
    {"score": {"$lt": 3.7, "$gte": 3}},
    {"topic": {"$in": ["redis", "chroma"]}},
    {"topic": {"$nin": ["redis", "ops"]}},
    {"year": {"$in": [2021, "2021"]}},
    {"public": True},
    {"public": {"$ne": True}},
    {"lang": {"$nin": ["de"]}},
    {"$and": [{"topic": "ops"}, {"year": {"$gte": 2023}}]},
    {"$or": [{"topic": "chroma"}, {"score": {"$gte": 5}}]},
    {"topic": "ops", "score": {"$ne": 1}},
]
TEXT_CASES: list[dict[str, Any]] = [
    {"$contains": "error"},
    {"$not_contains": "error"},
    {"$contains": RARE},
    {"$and": [{"$contains": "Redis"}, {"$not_contains": "XAUTOCLAIM"}]},
    {"$or": [{"$contains": "tsvector"}, {"$contains": "KEDA"}]},
]


def post(stack: Stack, docs: dict[str, tuple[str, dict[str, Any]]], headers: dict[str, str]) -> str:
    response = httpx.post(
        f"{stack.url}/v1/documents",
        json=[{"id": d, "text": text, "metadata": meta} for d, (text, meta) in docs.items()],
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def finish(stack: Stack, *jobs: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        events = await wait_for_results(client, stack.names, set(jobs), timeout=300)
    finally:
        await client.aclose()
    for job in jobs:
        assert any(e.type == "job.completed.v1" for e in events[job]), (events[job], stack.logs())


async def chunk_texts(stack: Stack, tenant: str) -> dict[tuple[str, int], str]:
    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": stack.schema})
    try:
        rows = await conn.fetch(
            "SELECT document_id, idx, text FROM chunks WHERE tenant = $1", tenant
        )
    finally:
        await conn.close()
    return {(row["document_id"], row["idx"]): row["text"] for row in rows}


class Deployment:
    def __init__(self, stack: Stack, globex_key: str, chunks: dict[tuple[str, int], str]) -> None:
        self.stack = stack
        self.globex = {"X-API-Key": globex_key}
        self.chunks = chunks

    def search(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.stack.url}/v1/search",
            json=body,
            headers=headers or self.stack.headers,
            timeout=60,
        )

    def expected(
        self, where: dict[str, Any] | None, text: dict[str, Any] | None
    ) -> set[tuple[str, int]]:
        return {
            key
            for key, chunk in self.chunks.items()
            if (where is None or matches_where(where, DOCS[key[0]][1]))
            and (text is None or matches_text(text, chunk))
        }


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("search-e2e")
    stack = create_stack(tmp, redis_url=REDIS_URL, database_url=PG_DSN, EMBEDSTREAM_BLOCK_MS="200")
    try:
        stack.start_chroma_server()
        stack.start("api", "api")
        for kind in ("embed", "index", "persist"):
            stack.start_worker(kind, f"{kind}-0")
        stack.wait_ready()
        globex_key = stack.create_key("globex", "documents:write", "search:read", "documents:read")
        jobs = [post(stack, DOCS, stack.headers), post(stack, GLOBEX, {"X-API-Key": globex_key})]
        asyncio.run(finish(stack, *jobs))
        chunks = asyncio.run(chunk_texts(stack, "bench"))
        assert {d for d, _ in chunks} == set(DOCS)
        assert sum(d == "python/long" for d, _ in chunks) >= 3  # a document of several chunks
        yield Deployment(stack, globex_key, chunks)
    finally:
        stack.stop_all()
        asyncio.run(remove_stack_data(stack))


def found(response: httpx.Response) -> list[tuple[str, int]]:
    assert response.status_code == 200, response.text
    return [(r["document_id"], r["chunk_index"]) for r in response.json()["results"]]


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_each_operator_returns_exactly_the_matching_chunks(
    deployment: Deployment, mode: str
) -> None:
    wrong = []
    cases = [(where, None) for where in WHERE_CASES] + [
        (where, text) for text in TEXT_CASES for where in (None, {"topic": {"$ne": "redis"}})
    ]
    for where, text in cases:
        body: dict[str, Any] = {"query": "error codes of a deploy", "limit": 100, "mode": mode}
        if where is not None:
            body["where"] = where
        if text is not None:
            body["where_document"] = text
        got = found(deployment.search(body))
        want = deployment.expected(where, text)
        if set(got) != want or len(got) != len(want):
            wrong.append(f"{where} / {text}: extra {set(got) - want}, missing {want - set(got)}")
    assert not wrong, "\n".join(wrong)


def test_nothing_of_another_tenant_is_ever_returned(deployment: Deployment) -> None:
    for where, field in [
        ({"tenant": "globex"}, "body.where.tenant"),
        ({"$or": [{"topic": "redis"}, {"tenant": {"$ne": "bench"}}]}, "body.where.$or.1.tenant"),
    ]:
        response = deployment.search({"query": "Redis Streams", "where": where})
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == [field]
    for mode in ("vector", "hybrid"):
        ours = found(deployment.search({"query": f"error {RARE}", "limit": 100, "mode": mode}))
        assert set(ours) == set(deployment.chunks)  # every chunk of ours, none of globex's
        theirs = found(
            deployment.search(
                {"query": f"error {RARE}", "limit": 100, "mode": mode}, deployment.globex
            )
        )
        assert {d for d, _ in theirs} == set(GLOBEX)


def test_a_rare_identifier_ranks_its_chunk_first_in_hybrid_mode(deployment: Deployment) -> None:
    query = f"what does error {RARE} mean"
    hybrid = deployment.search({"query": query, "mode": "hybrid", "limit": 5})
    assert found(hybrid)[0] == ("ops/incident", 0)
    first = hybrid.json()["results"][0]
    assert first["lexical_rank"] == 1
    # the vectors alone rank the generic error pages above it: the exact term is what
    # hybrid adds (deterministic for this model and corpus)
    vector = found(deployment.search({"query": query, "mode": "vector", "limit": 5}))
    assert vector[0] != ("ops/incident", 0)
    # the identifier alone, and with filters that keep it
    assert found(deployment.search({"query": RARE, "mode": "hybrid"}))[0] == ("ops/incident", 0)
    kept = deployment.search(
        {"query": query, "mode": "hybrid", "where": {"year": {"$gte": 2024}}, "limit": 3}
    )
    assert found(kept)[0] == ("ops/incident", 0)


def test_the_query_vector_is_the_workers_vector(deployment: Deployment) -> None:
    for key in [("redis/claim", 0), ("python/long", 1)]:
        text = deployment.chunks[key]
        response = deployment.search({"query": text, "limit": 1, "include": ["distances"]})
        [hit] = response.json()["results"]
        assert (hit["document_id"], hit["chunk_index"]) == key
        assert hit["distance"] <= 1e-5, hit  # cosine similarity >= 0.99999


def test_the_cli_searches_with_the_same_code_and_filters(deployment: Deployment) -> None:
    where = {"topic": "ops"}
    api = found(
        deployment.search({"query": f"error {RARE}", "mode": "hybrid", "where": where, "limit": 3})
    )
    done = subprocess.run(
        [sys.executable, "-m", "embedstream", "search", f"error {RARE}", "--tenant", "bench",
         "--mode", "hybrid", "--where", json.dumps(where), "--limit", "3", "--json"],
        env=deployment.stack.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cli = [(hit["document_id"], hit["chunk_index"]) for hit in json.loads(done.stdout)]
    assert cli == api
    refused = subprocess.run(
        [sys.executable, "-m", "embedstream", "search", "x", "--tenant", "bench",
         "--where", '{"tenant": "globex"}'],
        env=deployment.stack.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2  # a usage error: the message goes to stderr
    assert "--where.tenant" in refused.stderr


def test_documents_show_what_the_pipeline_stored(deployment: Deployment) -> None:
    stack = deployment.stack
    got = httpx.get(f"{stack.url}/v1/documents/redis%2Fstreams", headers=stack.headers)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["state"] == "live" and body["chunk_count"] == 1
    assert body["metadata"] == DOCS["redis/streams"][1]
    # delete it through the pipeline: a tombstone, and search stops finding it
    job = httpx.delete(f"{stack.url}/v1/documents/redis%2Fstreams", headers=stack.headers)
    assert job.status_code == 202
    asyncio.run(finish(stack, job.json()["job_id"]))
    status = httpx.get(f"{stack.url}{job.json()['status_url']}", headers=stack.headers).json()
    gone = httpx.get(f"{stack.url}/v1/documents/redis%2Fstreams", headers=stack.headers).json()
    assert gone["state"] == "deleted" and gone["deleted"] and gone["chunk_count"] == 0
    assert gone["version"] == status["documents"][0]["version"]
    for mode in ("vector", "hybrid"):
        hits = found(deployment.search({"query": "Redis Streams consumer groups", "mode": mode}))
        assert ("redis/streams", 0) not in hits
    deployment.chunks.pop(("redis/streams", 0))
    listed = httpx.get(f"{stack.url}/v1/documents?limit=1000", headers=stack.headers).json()
    assert [d["id"] for d in listed["documents"]] == sorted(set(DOCS) - {"redis/streams"})
