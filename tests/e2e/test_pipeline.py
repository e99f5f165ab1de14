"""The product end to end: real API and worker processes on the real Redis, PostgreSQL
and an embedded Chroma."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import httpx
import pytest
import redis.asyncio as redis
from bench.corpus import generate

from embedstream.schemas.tenancy import split_document_key
from embedstream.streams.names import EMBED
from tests.e2e.conftest import PG_DSN, Stack
from tests.e2e.stores import chroma_records, expected_chunk_ids, pg_documents, wait_for_results
from tests.support.streams import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def start_pipeline(stack: Stack, embed_replicas: int = 1) -> None:
    stack.start("api", "api")
    for n in range(embed_replicas):
        stack.start_worker("embed", f"embed-{n}")
    stack.start_worker("index", "index-0")
    stack.start_worker("persist", "persist-0")
    stack.wait_ready()


def post(
    stack: Stack, documents: list[dict[str, object]], headers: dict[str, str] | None = None
) -> str:
    response = httpx.post(
        f"{stack.url}/v1/documents",
        json={"documents": documents},
        headers=headers or stack.headers,
        timeout=30,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def delete(stack: Stack, document_id: str, headers: dict[str, str] | None = None) -> str:
    response = httpx.delete(
        f"{stack.url}/v1/documents/{document_id}", headers=headers or stack.headers, timeout=30
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def assert_clean_exit(stack: Stack) -> None:
    """Every process drained and exited 0 on SIGTERM (uvicorn re-raises SIGTERM after its
    graceful shutdown, so the API's clean exit shows as -15 with that log line)."""
    codes = stack.stop_all()
    api_log = (stack.log_dir / "api.log").read_text(errors="replace")
    if codes.get("api") == -15 and "Finished server process" in api_log:
        codes["api"] = 0
    assert all(code == 0 for code in codes.values()), (codes, stack.logs())


async def test_two_hundred_documents_one_job_completed(
    stack: Stack, results_reader: redis.Redis
) -> None:
    texts = {
        f"doc-{n:03d}": text
        for n, text in enumerate(generate(200, seed=3, min_words=30, max_words=260))
    }
    start_pipeline(stack)
    job = post(
        stack,
        [{"id": k, "text": v, "metadata": {"n": i}} for i, (k, v) in enumerate(texts.items())],
    )

    events = await wait_for_results(results_reader, stack.names, {job}, timeout=420)
    finished = [e for e in events[job] if e.type.startswith("job.")]
    assert [e.type for e in finished] == ["job.completed.v1"]
    assert json.loads(finished[0].data)["documents"] == 200
    status = httpx.get(f"{stack.url}/v1/jobs/{job}", headers=stack.headers).json()
    assert status["state"] == "completed" and status["done"] == 200

    assert_clean_exit(stack)
    expected = expected_chunk_ids(texts)
    docs = await pg_documents(PG_DSN, stack.schema)
    assert set(docs) == set(texts)
    assert {c for d in docs.values() for c in d.chunk_ids} == expected
    assert {d: doc.text for d, doc in docs.items()} == texts
    records = chroma_records(stack.chroma_path)
    assert set(records) == expected
    assert all(
        (records[c]["tenant"], records[c]["document_id"]) == split_document_key(c.rsplit(":", 1)[0])
        for c in records
    )

    # Chroma is derived: lose it, rebuild it from PostgreSQL, get the same records back.
    shutil.rmtree(stack.chroma_path)
    subprocess.run(
        [sys.executable, "-m", "embedstream", "reindex"], env=stack.env, check=True, timeout=300
    )
    rebuilt = chroma_records(stack.chroma_path)
    assert set(rebuilt) == expected
    assert {k: (v["version"], v["content_hash"]) for k, v in rebuilt.items()} == {
        k: (v["version"], v["content_hash"]) for k, v in records.items()
    }


async def test_update_shrink_and_delete(stack: Stack, results_reader: redis.Redis) -> None:
    long_text = generate(1, seed=5, min_words=600, max_words=700)[0]
    short_text = "A short replacement text."
    start_pipeline(stack)

    first = post(stack, [{"id": "doc/one", "text": long_text}])
    await wait_for_results(results_reader, stack.names, {first}, timeout=240)
    grown = await pg_documents(PG_DSN, stack.schema)
    assert len(grown["doc/one"].chunk_ids) == len(expected_chunk_ids({"doc/one": long_text})) > 2

    second = post(stack, [{"id": "doc/one", "text": short_text}])
    await wait_for_results(results_reader, stack.names, {second}, timeout=240)
    shrunk = await pg_documents(PG_DSN, stack.schema)
    assert shrunk["doc/one"].chunk_ids == ["bench/doc/one:0"]
    assert shrunk["doc/one"].text == short_text

    third = delete(stack, "doc/one")
    events = await wait_for_results(results_reader, stack.names, {third}, timeout=240)
    assert sorted(e.type for e in events[third]) == [
        "document.deleted.v1",
        "document.deleted.v2",
        "job.completed.v1",
    ]

    assert_clean_exit(stack)
    gone = await pg_documents(PG_DSN, stack.schema)
    assert gone["doc/one"].deleted and gone["doc/one"].chunk_ids == []
    assert chroma_records(stack.chroma_path) == {}


@pytest.mark.parametrize("last", ["upsert", "delete"])
async def test_upsert_delete_race_three_embed_replicas(
    stack: Stack, results_reader: redis.Redis, last: str
) -> None:
    texts = generate(12, seed=9, min_words=20, max_words=500)
    start_pipeline(stack, embed_replicas=3)
    jobs: list[str] = []
    for n in range(24):
        if n % 3 == 2:
            jobs.append(delete(stack, "race"))
        else:
            jobs.append(post(stack, [{"id": "race", "text": texts[n % len(texts)]}]))
    final_text = "the final text " * 40
    if last == "upsert":
        jobs.append(post(stack, [{"id": "race", "text": final_text}]))
    else:
        jobs.append(delete(stack, "race"))
    await wait_for_results(results_reader, stack.names, set(jobs), timeout=420)

    assert_clean_exit(stack)
    doc = (await pg_documents(PG_DSN, stack.schema))["race"]
    records = chroma_records(stack.chroma_path)
    if last == "upsert":
        assert not doc.deleted and doc.text == final_text
        expected = expected_chunk_ids({"race": final_text})
        assert set(doc.chunk_ids) == expected
        assert set(records) == expected
        assert {r["version"] for r in records.values()} == {doc.version}
    else:
        assert doc.deleted and doc.chunk_ids == []
        assert records == {}


async def test_worker_killed_mid_run_loses_nothing(
    stack: Stack, results_reader: redis.Redis
) -> None:
    texts = {
        f"k-{n:03d}": t for n, t in enumerate(generate(60, seed=4, min_words=150, max_words=400))
    }
    start_pipeline(stack)
    job = post(stack, [{"id": k, "text": v} for k, v in texts.items()])

    # Wait until the embed worker has work in hand, then kill it and the persister.
    async def embedding() -> bool:
        try:
            pending = await results_reader.xpending(stack.names.ingest, EMBED.group)
        except redis.ResponseError:  # the group appears once the model has loaded
            return False
        return bool(pending["pending"])

    await wait_until(embedding, within=120, what="the embed worker to take the job's entries")
    stack.kill("embed-0")
    stack.kill("persist-0")
    stack.start_worker("embed", "embed-1")
    stack.start_worker("persist", "persist-1")

    events = await wait_for_results(results_reader, stack.names, {job}, timeout=420)
    assert [e.type for e in events[job]] == ["job.completed.v1"]
    assert_clean_exit(stack)
    docs = await pg_documents(PG_DSN, stack.schema)
    expected = expected_chunk_ids(texts)
    assert {c for d in docs.values() for c in d.chunk_ids} == expected
    assert set(chroma_records(stack.chroma_path)) == expected


async def test_two_tenants_share_a_document_id_apart(
    stack: Stack, results_reader: redis.Redis
) -> None:
    """Tenant globex upserts and deletes the id bench also uses: bench's document stays
    intact in PostgreSQL and Chroma, and globex cannot read bench's job."""
    other = {"X-API-Key": stack.create_key("globex", "documents:write", "jobs:read")}
    mine, theirs = "Bench keeps this document.", "Globex writes its own copy."
    start_pipeline(stack)

    job_a = post(stack, [{"id": "shared/doc", "text": mine}])
    job_b = post(stack, [{"id": "shared/doc", "text": theirs}], headers=other)
    await wait_for_results(results_reader, stack.names, {job_a, job_b}, timeout=240)
    job_del = delete(stack, "shared/doc", headers=other)
    events = await wait_for_results(results_reader, stack.names, {job_del}, timeout=240)

    assert {(e.type, e.tenant) for e in events[job_del]} == {
        ("document.deleted.v1", "globex"),
        ("document.deleted.v2", "globex"),
        ("job.completed.v1", "globex"),
    }
    assert httpx.get(f"{stack.url}/v1/jobs/{job_a}", headers=other).status_code == 404
    assert httpx.get(f"{stack.url}/v1/jobs/{job_b}", headers=other).status_code == 200

    assert_clean_exit(stack)
    bench = await pg_documents(PG_DSN, stack.schema)
    globex = await pg_documents(PG_DSN, stack.schema, tenant="globex")
    assert (bench["shared/doc"].text, bench["shared/doc"].deleted) == (mine, False)
    assert bench["shared/doc"].chunk_ids == ["bench/shared/doc:0"]
    assert globex["shared/doc"].deleted and globex["shared/doc"].chunk_ids == []
    records = chroma_records(stack.chroma_path)
    assert set(records) == {"bench/shared/doc:0"}
    assert records["bench/shared/doc:0"]["tenant"] == "bench"
