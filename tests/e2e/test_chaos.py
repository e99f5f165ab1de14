"""Chaos, end to end (issue 9, "Show"): two replicas of every worker against a private
Redis (AOF) and a Chroma server, a random worker SIGKILLed and restarted every few
seconds while documents go in, Redis restarted on its AOF mid-run, edit/revert and
delete races on a few ids (each command a request of its own, after the previous 202),
and poison entries on the streams. Afterwards: every job completed once, nothing else
dead-lettered, every poison entry dead-lettered with its reason, each document in both
stores exactly as its last command left it, PostgreSQL and Chroma equal chunk for chunk,
streams and groups intact, no in-flight count left over, no traceback in any log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from bench.corpus import generate
from bench.stack import Stack, create_stack, remove_stack_data

from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import DOCUMENT_EMBEDDED_V2, DocumentEmbeddedV2, EmbeddedChunk
from embedstream.schemas.versions import version_text
from tests.e2e.conftest import PG_DSN
from tests.e2e.stores import expected_chunk_ids, job_version, pg_documents
from tests.support.chroma_server import chroma_server, server_records
from tests.support.redis_server import PrivateRedis

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

WORKERS = [
    ("embed", "embed-0"),
    ("embed", "embed-1"),
    ("index", "index-0"),
    ("index", "index-1"),
    ("persist", "persist-0"),
    ("persist", "persist-1"),
]
SCRIPTS = (  # mixed scripts, as a real corpus has them
    "Ελληνικά: ο ποταμός ρέει βόρεια την άνοιξη. ",  # noqa: RUF001
    "Русский: река течёт на север весной. ",
    "日本語：川は春に北へ流れる。",  # noqa: RUF001
    "العربية: يجري النهر شمالاً في الربيع. ",
)


@dataclass
class Command:
    document: str
    kind: str  # "upsert" | "delete"
    text: str | None
    job: str


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def chroma_url(tmp_path: Path) -> Iterator[str]:
    with chroma_server(tmp_path / "chroma-server") as url:
        yield url


@pytest.fixture
def chaos_stack(tmp_path: Path, private_redis: PrivateRedis, chroma_url: str) -> Iterator[Stack]:
    stack = create_stack(
        tmp_path,
        redis_url=private_redis.url,
        database_url=PG_DSN,
        EMBEDSTREAM_BLOCK_MS="200",
        EMBEDSTREAM_BATCH_SIZE="4",  # small batches: a kill loses little work
        EMBEDSTREAM_VISIBILITY_TIMEOUT_MS="4000",
        EMBEDSTREAM_CLAIM_INTERVAL_MS="300",
        EMBEDSTREAM_RETRY_BACKOFF_MS="100",
        EMBEDSTREAM_RETRY_BACKOFF_MAX_MS="1000",
        EMBEDSTREAM_MAX_DELIVERIES="10",
        EMBEDSTREAM_DRAIN_TIMEOUT_S="10",
    )
    stack.env["EMBEDSTREAM_CHROMA_URL"] = chroma_url  # server mode: two active index replicas
    try:
        yield stack
    finally:
        stack.stop_all()
        asyncio.run(remove_stack_data(stack))


# -- driving -------------------------------------------------------------------------


def send(stack: Stack, method: str, path: str, body: Any = None, within: float = 90) -> str:
    """A request with an Idempotency-Key, repeated through outages (Redis restarting)
    until it is accepted: exactly one job whatever the number of tries."""
    headers = {**stack.headers, "Idempotency-Key": uuid.uuid4().hex}
    deadline = time.monotonic() + within
    while True:
        try:
            response = httpx.request(
                method, f"{stack.url}{path}", json=body, headers=headers, timeout=10
            )
            if response.status_code == 202:
                job: str = response.json()["job_id"]
                return job
            assert response.status_code in (429, 500, 502, 503), response.text
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{method} {path} not accepted in {within}s"
        time.sleep(0.2)


async def upsert(stack: Stack, docs: list[tuple[str, str]], log: list[Command]) -> str:
    body = {"documents": [{"id": d, "text": t, "metadata": {"n": len(log)}} for d, t in docs]}
    job = await asyncio.to_thread(send, stack, "POST", "/v1/documents", body)
    log.extend(Command(d, "upsert", t, job) for d, t in docs)
    return job


async def delete(stack: Stack, document: str, log: list[Command]) -> str:
    job = await asyncio.to_thread(send, stack, "DELETE", f"/v1/documents/{document}")
    log.append(Command(document, "delete", None, job))
    return job


KILL_WEIGHTS = {"embed": 1, "index": 2, "persist": 2}
"""An embed worker spends ~10 s of CPU loading its model on this 2-core machine: killed as
often as the others, the embed stage would do little but start."""


async def chaos(
    stack: Stack,
    stop: asyncio.Event,
    rng: random.Random,
    kills: list[str],
    struck: asyncio.Event,
) -> None:
    """SIGKILL a random worker every 1-2.5 s and start it again under the same name;
    ``struck`` is set after four kills."""
    weights = [KILL_WEIGHTS[kind] for kind, _ in WORKERS]
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(1.0, 2.5))
        except TimeoutError:
            [(kind, name)] = rng.choices(WORKERS, weights)
            stack.kill(name)
            stack.start_worker(kind, name)
            kills.append(name)
            if len(kills) >= 4:
                struck.set()


async def jobs_finished(
    client: redis.Redis, stack: Stack, jobs: set[str], within: float
) -> dict[str, list[Envelope]]:
    deadline = time.monotonic() + within
    done: set[str] = set()
    while True:
        try:
            by_job: dict[str, list[Envelope]] = {}
            for _, fields in await client.xrange(stack.names.results):
                envelope = Envelope.from_fields(fields)
                by_job.setdefault(json.loads(envelope.data)["job_id"], []).append(envelope)
            done = {
                j for j, events in by_job.items() if any(e.type.startswith("job.") for e in events)
            }
            if jobs <= done:
                return by_job
        except redis.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"jobs not finished: {len(jobs - done)}\n{stack.logs()}"
        await asyncio.sleep(0.3)


async def drained(client: redis.Redis, stack: Stack, within: float = 120) -> None:
    """Every group has read everything and holds nothing pending."""
    names = stack.names
    deadline = time.monotonic() + within
    while True:
        busy = []
        for stream, group in (
            (names.ingest, "embedder"),
            (names.embedded, "indexer"),
            (names.embedded, "persister"),
        ):
            info = {g["name"].decode(): g for g in await client.xinfo_groups(stream)}
            if info[group]["pending"] or info[group]["lag"]:
                busy.append((stream, group, info[group]["pending"], info[group]["lag"]))
        if not busy:
            return
        assert time.monotonic() < deadline, busy
        await asyncio.sleep(0.3)


async def add_poison(client: redis.Redis, stack: Stack) -> set[tuple[str, str, str]]:
    """Entries no worker can use; (stream, entry id, group) of the dead letters expected."""
    names = stack.names
    ce = {
        "id": "p",
        "source": "chaos",
        "specversion": "1.0",
        "time": "2026-01-01T00:00:00+00:00",
        "tenant": "bench",
        "datacontenttype": "application/json",
        "schemaversion": 1,
    }
    ingest = [
        {"ce": "not json", "data": "{}"},
        {"garbage": "no envelope at all"},
        {
            "ce": json.dumps({**ce, "type": "document.upsert.v1", "subject": "p1"}),
            "data": json.dumps({"job_id": "none", "document_id": "p1", "text": 42}),
        },
        {
            "ce": json.dumps({**ce, "type": "document.frobnicate.v1", "subject": "p2"}),
            "data": json.dumps({"job_id": "none", "document_id": "p2"}),
        },
    ]
    # poison on purpose: the model refuses it (a 3-byte vector for dim 384), so it is built
    # without validation, as another producer could write it
    bad_vector = DocumentEmbeddedV2.model_construct(
        job_id="none",
        document_id="p3",
        version=version_text(1),
        content_hash="h",
        model="all-MiniLM-L6-v2",
        dim=384,
        text="t",
        chunk_count=1,
        chunks=[EmbeddedChunk(id="bench/p3:0", index=0, text="t", vector="AAAA")],
    )
    embedded = [
        {
            "ce": json.dumps({**ce, "type": DOCUMENT_EMBEDDED_V2, "subject": "p3"}),
            "data": bad_vector.model_dump_json(),
        },
        {"ce": json.dumps({**ce, "type": "document.embedded.v1"}), "data": "{not json"},
    ]
    expected: set[tuple[str, str, str]] = set()
    for fields in ingest:
        entry = (await client.xadd(names.ingest, fields)).decode()  # type: ignore[arg-type]
        expected.add((names.ingest, entry, "embedder"))
    for fields in embedded:
        entry = (await client.xadd(names.embedded, fields)).decode()  # type: ignore[arg-type]
        expected |= {(names.embedded, entry, "indexer"), (names.embedded, entry, "persister")}
    return expected


# -- the test ------------------------------------------------------------------------


async def test_chaos(chaos_stack: Stack, private_redis: PrivateRedis) -> None:
    stack = chaos_stack
    rng = random.Random(9)
    corpus = generate(36, seed=21, min_words=40, max_words=450)  # 1-4 chunks
    texts = {f"c-{n:02d}": SCRIPTS[n % 4] + text for n, text in enumerate(corpus)}
    race = [f"race-{n}" for n in range(6)]
    a = {r: f"{SCRIPTS[n % 4]}{r} first text. " * (3 + n) for n, r in enumerate(race)}
    b = {r: f"{r} edited text, quite different. " * (2 + n) for n, r in enumerate(race)}

    stack.start("api", "api")
    for kind, name in WORKERS:
        stack.start_worker(kind, name)
    stack.wait_ready()
    client = redis.Redis.from_url(private_redis.url)
    log: list[Command] = []
    kills: list[str] = []
    stop, struck = asyncio.Event(), asyncio.Event()
    monkey = asyncio.create_task(chaos(stack, stop, rng, kills, struck))
    try:
        items = list(texts.items())
        await upsert(stack, items[:12], log)
        first = [await upsert(stack, [(r, a[r])], log) for r in race]
        await upsert(stack, items[12:24], log)
        await jobs_finished(client, stack, set(first), within=150)

        # the races, each command after the previous 202
        await upsert(stack, [("race-0", b["race-0"])], log)  # A, B, A
        await delete(stack, "race-1", log)  # A, delete, A
        await upsert(stack, [("race-2", b["race-2"])], log)  # A, B, B
        await delete(stack, "race-3", log)  # A, delete
        await upsert(stack, [("race-4", b["race-4"])], log)  # A, B, delete, A
        await upsert(stack, [("race-5", a["race-5"])], log)  # A, A (a reuse), delete, A
        await upsert(stack, [("race-0", a["race-0"])], log)
        await upsert(stack, [("race-1", a["race-1"])], log)

        # Redis restarts on its AOF with work in every stage, after some kills
        await asyncio.wait_for(struck.wait(), 60)
        await client.aclose()
        await private_redis.stop()
        await asyncio.sleep(1.0)
        await private_redis.start()
        client = redis.Redis.from_url(private_redis.url)

        await upsert(stack, [("race-2", b["race-2"])], log)
        await delete(stack, "race-4", log)
        await delete(stack, "race-5", log)
        await upsert(stack, items[24:], log)
        poison = await add_poison(client, stack)
        await upsert(stack, [("race-4", a["race-4"])], log)
        await upsert(stack, [("race-5", a["race-5"])], log)

        jobs = {c.job for c in log}
        events = await jobs_finished(client, stack, jobs, within=240)
    finally:
        stop.set()
        await monkey
    await drained(client, stack)

    # -- every job completed, once; nothing lost to the dead-letter stream but poison
    assert kills, "the chaos never struck"
    for job in jobs:
        finished = [e.type for e in events[job] if e.type.startswith("job.")]
        assert finished == ["job.completed.v1"], (job, [json.loads(e.data) for e in events[job]])
    for command in log:
        if command.kind == "delete":
            deleted = sorted(e.type for e in events[command.job] if e.type.startswith("document."))
            assert deleted == ["document.deleted.v1", "document.deleted.v2"]
    letters = [fields for _, fields in await client.xrange(stack.names.dlq)]
    got = {
        (f[b"dlq_stream"].decode(), f[b"dlq_id"].decode(), f[b"dlq_group"].decode())
        for f in letters
    }
    assert got == poison, [(f[b"dlq_id"], f[b"dlq_error"]) for f in letters]
    assert len(letters) == len(poison)  # each once
    assert all(f[b"dlq_error"].strip() for f in letters)

    # -- streams, groups and in-flight counts intact after the restart
    for stream, groups in (
        (stack.names.ingest, {"embedder"}),
        (stack.names.embedded, {"indexer", "persister"}),
    ):
        found = {g["name"].decode() for g in await client.xinfo_groups(stream)}
        assert groups <= found, (stream, found)
    assert await client.hlen(stack.names.key("ingest", "inflight")) == 0
    assert await client.hlen(stack.names.key("ingest", "inflight", "entries")) == 0

    # -- each document as its last command left it, in both stores
    last: dict[str, Command] = {}
    for command in log:
        last[command.document] = command
    versions = {
        doc: await asyncio.to_thread(job_version, stack, c.job, doc) for doc, c in last.items()
    }
    await client.aclose()
    stack.stop_all()
    docs = await pg_documents(PG_DSN, stack.schema)
    records = server_records(stack.env["EMBEDSTREAM_CHROMA_URL"])
    assert set(docs) == set(last)
    live = {doc: c.text for doc, c in last.items() if c.kind == "upsert"}
    for doc, command in last.items():
        stored = docs[doc]
        assert stored.version == versions[doc], doc
        assert stored.deleted == (command.kind == "delete"), doc
        if command.kind == "upsert":
            assert command.text is not None
            assert stored.text == command.text, doc
            assert set(stored.chunk_ids) == expected_chunk_ids({doc: command.text}), doc
        else:
            assert stored.chunk_ids == [], doc
    # PostgreSQL and Chroma agree chunk for chunk, on version and content
    pg_chunks = {cid: (docs[d].version, d) for d in docs for cid in docs[d].chunk_ids}
    assert set(records) == set(pg_chunks) == expected_chunk_ids(live)
    for cid, meta in records.items():
        version, doc = pg_chunks[cid]
        text = live[doc]
        assert (meta["version"], meta["document_id"]) == (version, doc), cid
        assert meta["content_hash"] == hashlib.sha256(text.encode()).hexdigest(), cid

    # -- transient faults were handled, not crashed on
    for path in sorted(stack.log_dir.glob("*.log")):
        text = path.read_text(errors="replace")
        assert "Traceback" not in text, (path.name, text[text.index("Traceback") - 2000 :][:6000])
