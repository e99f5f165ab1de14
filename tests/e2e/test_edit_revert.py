"""Issue 9, item 1: edit, then revert to an earlier text, with two embed replicas. Each
document gets A, then B and A again (or A, delete, A) as separate requests, each after
the previous 202; the last command must win in both stores, and every job completes.
Before the fix the revert reused A's stored embedding while B was still being embedded
on the other replica; the stores refused the reuse until it was dead-lettered, the job
failed and the document kept B (or stayed deleted)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import redis.asyncio as redis
from bench.corpus import generate

from embedstream.schemas.envelope import Envelope
from tests.e2e.conftest import PG_DSN, Stack
from tests.e2e.stores import (
    chroma_records,
    expected_chunk_ids,
    job_version,
    pg_documents,
    wait_for_results,
)
from tests.e2e.test_pipeline import assert_clean_exit, delete, post

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

EDITED = 8
DELETED = 4


def texts(n: int) -> tuple[str, str]:
    a = f"Document {n} says what it said at first: the river runs north in spring. " * 3
    b = f"Document {n} was edited: the river runs south in autumn, and floods. " * 3
    return a, b


async def test_edit_and_revert_with_two_embed_replicas(
    stack: Stack, results_reader: redis.Redis
) -> None:
    stack.start("api", "api")
    for n in range(2):
        stack.start_worker("embed", f"embed-{n}")
    stack.start_worker("index", "index-0")
    for n in range(2):
        stack.start_worker("persist", f"persist-{n}")
    stack.wait_ready()

    ids = [f"doc-{n}" for n in range(EDITED + DELETED)]
    first = post(stack, [{"id": d, "text": texts(n)[0]} for n, d in enumerate(ids)])
    await wait_for_results(results_reader, stack.names, {first}, timeout=300)

    last: dict[str, str] = {}  # document -> its last job
    jobs: list[str] = []
    bulk = generate(EDITED + DELETED, seed=11, min_words=900, max_words=1000)
    for n, doc in enumerate(ids):
        a, b = texts(n)
        if n < EDITED:
            jobs.append(post(stack, [{"id": doc, "text": b}]))  # edit
        else:
            jobs.append(delete(stack, doc))
        # the revert comes with a long new document: its batch takes a while to encode,
        # so the edit, alone on the other replica, is done first
        revert = {"id": doc, "text": a, "metadata": {"rev": 3}}
        jobs.append(post(stack, [revert, {"id": f"bulk-{n}", "text": bulk[n]}]))
        last[doc] = jobs[-1]
    events = await wait_for_results(results_reader, stack.names, set(jobs), timeout=420)

    failed = {
        job: json.loads(e.data) for job in jobs for e in events[job] if e.type == "job.failed.v1"
    }
    assert failed == {}, failed
    assert await results_reader.xlen(stack.names.dlq) == 0, [
        Envelope.from_fields(f).type for _, f in await results_reader.xrange(stack.names.dlq)
    ]
    versions = {doc: job_version(stack, job, doc) for doc, job in last.items()}
    assert_clean_exit(stack)

    docs = await pg_documents(PG_DSN, stack.schema)
    records = chroma_records(stack.chroma_path)
    for n, doc in enumerate(ids):
        a, _ = texts(n)
        stored = docs[doc]
        assert (stored.text, stored.deleted, stored.version) == (a, False, versions[doc]), doc
        expected = expected_chunk_ids({doc: a})
        assert set(stored.chunk_ids) == expected, doc
        mine = {cid: meta for cid, meta in records.items() if meta["document_id"] == doc}
        assert set(mine) == expected, doc
        digest = hashlib.sha256(a.encode()).hexdigest()
        assert {(m["version"], m["content_hash"], m["rev"]) for m in mine.values()} == {
            (versions[doc], digest, 3)
        }, doc


async def test_a_reuse_the_index_cannot_apply_is_embedded_again(
    stack: Stack, results_reader: redis.Redis
) -> None:
    """Issue 9, item 1(b): the embed stage reuses a stored embedding that the index no
    longer holds (its Chroma folder was lost; the version register still says it was
    written). The index asks for a re-embed at the same version instead of retrying to
    the delivery cap: the job completes and both stores end at the last command."""
    stack.start("api", "api")
    stack.start_worker("embed", "embed-0")
    stack.start_worker("index", "index-0")
    stack.start_worker("persist", "persist-0")
    stack.wait_ready()
    text = "A document whose chunks the index will lose. " * 4
    first = post(stack, [{"id": "lost", "text": text, "metadata": {"rev": 1}}])
    await wait_for_results(results_reader, stack.names, {first}, timeout=300)

    stack.kill("index-0")
    shutil.rmtree(stack.chroma_path)
    stack.start_worker("index", "index-1")
    again = post(stack, [{"id": "lost", "text": text, "metadata": {"rev": 2}}])
    events = await wait_for_results(results_reader, stack.names, {again}, timeout=300)

    assert [e.type for e in events[again]] == ["job.completed.v1"]
    version = job_version(stack, again, "lost")
    assert_clean_exit(stack)
    # the second post was a reuse; the index, without its chunks, asked for a re-embed
    assert "re-embed requested" in (stack.log_dir / "index-1.log").read_text()
    stored = (await pg_documents(PG_DSN, stack.schema))["lost"]
    assert (stored.version, stored.text) == (version, text)
    records = chroma_records(stack.chroma_path)
    assert set(records) == expected_chunk_ids({"lost": text})
    assert {(m["version"], m["rev"]) for m in records.values()} == {(version, 2)}
