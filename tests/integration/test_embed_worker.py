"""The embed worker on the real Redis with the real all-MiniLM-L6-v2 model, run in burst
mode: commands on the ingest stream become events on the embedded stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
import redis.asyncio as redis

from embedstream.adapters.embedder import PACKAGED_MODEL_NAME, Embedder
from embedstream.config import ConsumerSettings, EmbedSettings, Settings
from embedstream.errors import PoisonMessage
from embedstream.jobs.status import JobStatus
from embedstream.jobs.tracker import JobTracker, Submission
from embedstream.schemas.commands import (
    DOCUMENT_DELETE,
    DOCUMENT_REEMBED,
    DOCUMENT_UPSERT,
    DocumentDelete,
    DocumentReembed,
    DocumentUpsert,
)
from embedstream.schemas.envelope import Envelope, attributes_of
from embedstream.schemas.events import (
    DOCUMENT_EMBEDDED,
    DOCUMENT_REMOVED,
    DOCUMENT_REMOVED_V2,
    DocumentEmbedded,
    DocumentEmbeddedV2,
    DocumentRemoved,
    DocumentRemovedV2,
)
from embedstream.schemas.vectors import decode_vector
from embedstream.schemas.versions import version_text
from embedstream.streams.decoding import Decoded
from embedstream.streams.messages import Ack, DeadLetter, Message
from embedstream.streams.names import StreamNames, as_text, stream_id_to_version
from embedstream.streams.runner import RunStats
from embedstream.workers import embed as embed_worker
from embedstream.workers.embed import EMBED_STAGE, build_embed_worker
from embedstream.workers.reuse import EmbeddingRegister, StoredEmbedding
from embedstream.workers.stage import run_stage
from tests.conftest import REDIS_BACKENDS
from tests.support.builders import apply_ops

pytestmark = pytest.mark.integration


@pytest.fixture(params=REDIS_BACKENDS)
def redis_backend(request: pytest.FixtureRequest) -> str:
    """Every test on the single Redis and on a real local Redis Cluster."""
    backend: str = request.param
    return backend


LONG_TEXT = " ".join(
    f"Paragraph {i}: Redis Streams deliver commands to consumer groups, and the embed "
    "worker turns each document into overlapping token windows before encoding them."
    for i in range(40)
)


@pytest.fixture(scope="session")
def embedder() -> Iterator[Embedder]:
    """The real model, loaded once per test session."""
    loaded = Embedder.load(EmbedSettings())
    yield loaded
    loaded.close()


TENANT = "acme"


async def submit(
    tracker: JobTracker,
    commands: list[DocumentUpsert | DocumentDelete | Envelope],
    tenant: str = TENANT,
) -> str:
    """One job with these commands (an ``Envelope`` goes in as it is)."""
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    subs: list[Submission] = []
    for i, command in enumerate(commands):
        if isinstance(command, Envelope):
            subs.append(Submission(command.subject or f"raw{i}", "upsert", command))
            continue
        command = command.model_copy(update={"job_id": job_id})
        kind = "upsert" if isinstance(command, DocumentUpsert) else "delete"
        etype = DOCUMENT_UPSERT if kind == "upsert" else DOCUMENT_DELETE
        envelope = Envelope.wrap(
            etype, command, source="test", tenant=tenant, subject=command.document_id
        )
        subs.append(Submission(command.document_id, kind, envelope))
    await tracker.submit(job_id, subs, tenant=tenant)
    return job_id


def upsert(document_id: str, text: str, **metadata: str | int) -> DocumentUpsert:
    return DocumentUpsert(job_id="-", document_id=document_id, text=text, metadata=metadata)


async def run_worker(
    client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    settings: ConsumerSettings,
    embed: EmbedSettings | None = None,
) -> RunStats:
    worker = build_embed_worker(client, names, embedder, settings, embed)
    return await asyncio.wait_for(worker.run(burst=True), 120)


async def events(
    client: redis.Redis, names: StreamNames, version: int | None = 1
) -> list[Envelope]:
    """The events on the embedded stream in one type version (None: all of them)."""
    found = [Envelope.from_fields(f) for _, f in await client.xrange(names.embedded)]
    return [e for e in found if version is None or e.type.endswith(f".v{version}")]


async def embedded(client: redis.Redis, names: StreamNames) -> dict[str, DocumentEmbedded]:
    """The latest document.embedded event per document."""
    out: dict[str, DocumentEmbedded] = {}
    for env in await events(client, names):
        if env.type == DOCUMENT_EMBEDDED:
            event = env.payload(DocumentEmbedded)
            assert env.subject == event.document_id
            out[event.document_id] = event
    return out


async def versions(tracker: JobTracker, job_id: str) -> dict[str, int]:
    status = await tracker.status(job_id)
    assert status is not None
    return {item.document_id: stream_id_to_version(item.version) for item in status.items}


async def job(tracker: JobTracker, job_id: str) -> JobStatus:
    status = await tracker.status(job_id)
    assert status is not None
    return status


async def test_upserts_are_chunked_and_embedded_in_one_call(
    redis_client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    tracker: JobTracker,
    fast_settings: ConsumerSettings,
) -> None:
    job_id = await submit(
        tracker,
        [upsert("long", LONG_TEXT, lang="en"), upsert("short", "Hello, vector world!", n=1)],
    )
    calls = embedder.stats.calls
    stats = await run_worker(redis_client, names, embedder, fast_settings)

    assert stats.acked == 2
    assert embedder.stats.calls == calls + 1  # every chunk of the batch in one call
    by_doc = await embedded(redis_client, names)
    expected_versions = await versions(tracker, job_id)
    long, short = by_doc["long"], by_doc["short"]
    for event in (long, short):
        assert event.job_id == job_id
        assert event.model == PACKAGED_MODEL_NAME
        assert event.dim == 384
        assert event.reused is False
        assert event.version == expected_versions[event.document_id]
        assert event.chunk_count == len(event.chunks)
        assert [c.id for c in event.chunks] == [
            f"{TENANT}/{event.document_id}:{i}" for i in range(event.chunk_count)
        ]
        assert [c.index for c in event.chunks] == list(range(event.chunk_count))
    assert long.metadata == {"lang": "en"}
    assert long.text == LONG_TEXT
    assert long.chunk_count > 3
    assert all(c.text in LONG_TEXT for c in long.chunks)
    assert short.chunk_count == 1
    assert short.chunks[0].text == "Hello, vector world!"

    chunks = long.chunks + short.chunks
    direct = embedder.model.encode([c.text for c in chunks], normalize_embeddings=True)
    for chunk, reference in zip(chunks, direct, strict=True):
        vector = decode_vector(chunk.vector, 384)
        assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-4)
        assert float(vector @ reference) == pytest.approx(1.0, abs=1e-4)

    # each event also goes out as document.embedded.v2: the same, with version text
    twins = {
        e.subject: e.payload(DocumentEmbeddedV2)
        for e in await events(redis_client, names, version=2)
    }
    assert twins == {d: DocumentEmbeddedV2.from_v1(e) for d, e in by_doc.items()}
    assert twins["long"].version == f"{long.version:020d}"

    status = await job(tracker, job_id)
    assert {item.document_id: item.stages for item in status.items} == {
        "long": {"embed": "done"},
        "short": {"embed": "done"},
    }
    assert await redis_client.xpending(names.ingest, "embedder") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_delete_is_forwarded_with_its_version(
    redis_client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    tracker: JobTracker,
    fast_settings: ConsumerSettings,
) -> None:
    job_id = await submit(tracker, [DocumentDelete(job_id="-", document_id="gone")])
    calls = embedder.stats.calls
    await run_worker(redis_client, names, embedder, fast_settings)

    [env] = await events(redis_client, names)
    assert env.type == DOCUMENT_REMOVED
    assert env.subject == "gone"
    removed = env.payload(DocumentRemoved)
    assert removed == DocumentRemoved(
        job_id=job_id, document_id="gone", version=(await versions(tracker, job_id))["gone"]
    )
    [twin] = await events(redis_client, names, version=2)
    assert twin.type == DOCUMENT_REMOVED_V2
    assert twin.payload(DocumentRemovedV2) == DocumentRemovedV2.from_v1(removed)
    assert embedder.stats.calls == calls  # nothing to encode
    stored = await redis_client.hget(names.key("embed", "hashes"), "acme/gone")
    assert stored is not None
    assert stored.decode().startswith("deleted|")
    assert (await job(tracker, job_id)).items[0].stages == {"embed": "done"}


async def test_unchanged_text_is_reused_and_changed_text_is_embedded_again(
    redis_client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    tracker: JobTracker,
    fast_settings: ConsumerSettings,
) -> None:
    await submit(tracker, [upsert("doc", LONG_TEXT, rev=1)])
    await run_worker(redis_client, names, embedder, fast_settings)
    first = (await embedded(redis_client, names))["doc"]

    # same text, new metadata: reused, without encoding
    calls, chunks = embedder.stats.calls, embedder.stats.chunks
    job_id = await submit(tracker, [upsert("doc", LONG_TEXT, rev=2)])
    await run_worker(redis_client, names, embedder, fast_settings)
    assert (embedder.stats.calls, embedder.stats.chunks) == (calls, chunks)
    reused = (await embedded(redis_client, names))["doc"]
    assert reused.reused is True
    assert reused.chunks == []
    assert reused.chunk_count == first.chunk_count
    assert reused.content_hash == first.content_hash
    assert reused.metadata == {"rev": 2}
    assert reused.text == LONG_TEXT
    assert reused.version == (await versions(tracker, job_id))["doc"] > first.version
    assert (await job(tracker, job_id)).items[0].stages == {"embed": "done"}

    # changed text: embedded again
    await submit(tracker, [upsert("doc", LONG_TEXT + " One more sentence.")])
    await run_worker(redis_client, names, embedder, fast_settings)
    changed = (await embedded(redis_client, names))["doc"]
    assert embedder.stats.calls == calls + 1
    assert changed.reused is False
    assert changed.content_hash != first.content_hash
    assert changed.chunk_count == len(changed.chunks) > 0

    # deleted, then the same text again: embedded again (stores dropped the chunks)
    await submit(tracker, [DocumentDelete(job_id="-", document_id="doc")])
    await submit(tracker, [upsert("doc", LONG_TEXT + " One more sentence.")])
    await run_worker(redis_client, names, embedder, fast_settings)
    again = (await embedded(redis_client, names))["doc"]
    assert again.reused is False
    assert again.chunk_count == changed.chunk_count
    assert embedder.stats.calls == calls + 2


async def test_repeats_within_one_batch_are_embedded_once_and_never_reused(
    redis_client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    tracker: JobTracker,
    fast_settings: ConsumerSettings,
) -> None:
    await submit(tracker, [upsert("a", "Same words."), upsert("b", "Same words.")])
    await submit(tracker, [upsert("a", "Same words.")])
    chunks = embedder.stats.chunks
    await run_worker(redis_client, names, embedder, fast_settings)
    evts = [e.payload(DocumentEmbedded) for e in await events(redis_client, names)]
    assert [(e.document_id, e.reused, e.chunk_count) for e in evts] == [
        ("a", False, 1),
        ("b", False, 1),
        ("a", False, 1),  # not reused: a's first embedding is not stored yet
    ]
    assert embedder.stats.chunks == chunks + 1  # one distinct text, one chunk encoded
    assert evts[0].chunks[0].vector == evts[1].chunks[0].vector == evts[2].chunks[0].vector
    assert evts[1].chunks[0].id == "acme/b:0"


async def test_poison_and_blank_documents_are_dead_lettered_alone(
    redis_client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    tracker: JobTracker,
    fast_settings: ConsumerSettings,
) -> None:
    bad_payload = Envelope(
        id="e-bad",
        source="test",
        type=DOCUMENT_UPSERT,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        subject="bad",
        tenant=TENANT,
        data=b'{"job_id": "JOB", "document_id": "bad", "text": 42}',
    )
    job_id = await submit(
        tracker,
        [
            upsert("first", "The first document is fine."),
            bad_payload,
            upsert("blank", " \n\t "),
            upsert("last", "The last document is fine too."),
        ],
    )
    # the raw envelope names its job: point it at the job just created
    [(entry_id, fields)] = [
        (i, f)
        for i, f in await redis_client.xrange(names.ingest)
        if attributes_of(f).get("id") == "e-bad"
    ]
    await redis_client.xdel(names.ingest, entry_id)
    fields[b"data"] = fields[b"data"].replace(b"JOB", job_id.encode())
    await redis_client.xadd(names.ingest, fields)
    unknown = Envelope.wrap(
        "document.frobnicate.v1", upsert("x", "y"), source="test", tenant=TENANT
    )
    await redis_client.xadd(names.ingest, unknown.to_fields())

    stats = await run_worker(redis_client, names, embedder, fast_settings)
    assert (stats.acked, stats.dead_lettered, stats.retried) == (2, 3, 0)
    assert set(await embedded(redis_client, names)) == {"first", "last"}

    dead = {attributes_of(f)["id"]: f for _, f in await redis_client.xrange(names.dlq)}
    assert len(dead) == 3
    by_subject = {str(attributes_of(f).get("subject", "")): f for f in dead.values()}
    assert set(by_subject) == {"bad", "blank", ""}
    assert by_subject["bad"][b"dlq_error_type"] == b"PoisonMessage"
    assert b"text" in by_subject["bad"][b"dlq_error"]
    assert by_subject["blank"][b"dlq_error_type"] == b"PermanentError"
    assert b"whitespace" in by_subject["blank"][b"dlq_error"]
    assert by_subject["blank"][b"dlq_stage"] == b"embed"
    assert dead[unknown.id][b"dlq_error_type"] == b"PoisonMessage"
    assert b"unknown type 'document.frobnicate.v1'" in dead[unknown.id][b"dlq_error"]

    status = await job(tracker, job_id)
    states = {item.document_id: (item.state, item.stages) for item in status.items}
    assert states == {
        "first": ("pending", {"embed": "done"}),
        "bad": ("failed", {"embed": "failed"}),
        "blank": ("failed", {"embed": "failed"}),
        "last": ("pending", {"embed": "done"}),
    }
    assert status.failed == 2


async def test_stored_hash_never_moves_backwards(
    redis_client: redis.Redis, names: StreamNames, embedder: Embedder, tracker: JobTracker
) -> None:
    register = EmbeddingRegister(redis_client, names)
    key = names.key("embed", "hashes")
    big = stream_id_to_version("1767225600000-5")  # beyond a Lua double's exact range
    for version, digest in [(big, "new"), (big - 1, "older"), (big, "same"), (big + 1, "newer")]:
        stored = StoredEmbedding(digest, version, 3, "p")
        await apply_ops(redis_client, [register.advance("acme/doc", stored)])
    assert await redis_client.hget(key, "acme/doc") == f"newer|{big + 1}|3|p".encode()


async def test_run_loads_the_model_and_closes_what_it_opened(
    redis_client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    tracker: JobTracker,
    fast_settings: ConsumerSettings,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
) -> None:
    monkeypatch.setenv("EMBEDSTREAM_REDIS_URL", redis_url)
    monkeypatch.setenv("EMBEDSTREAM_STREAM_PREFIX", names.prefix)
    settings = Settings()
    settings.__dict__["consumer"] = fast_settings
    opened: list[Embedder] = []

    async def load(_: EmbedSettings) -> Embedder:  # the session's model, a fresh embedder
        opened.append(
            Embedder(
                embedder.model,
                embedder.tokenizer,
                name=embedder.name,
                dim=embedder.dim,
                max_seq_length=embedder.max_seq_length,
            )
        )
        return opened[-1]

    monkeypatch.setattr(embed_worker, "load_embedder", load)
    await submit(tracker, [upsert("one", "Run me once.")])
    stats = await asyncio.wait_for(
        run_stage(EMBED_STAGE, settings, asyncio.Event(), burst=True), 120
    )
    assert stats.acked == 1
    assert set(await embedded(redis_client, names)) == {"one"}
    assert opened[0]._executor._shutdown  # closed in finally


async def test_a_revert_is_not_reused_while_another_replica_holds_a_newer_command(
    redis_client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    tracker: JobTracker,
    fast_settings: ConsumerSettings,
) -> None:
    """Issue 9, item 1: A, B, A as three requests, two embed replicas. Replica 1 holds B
    (read, not acked) when replica 2 handles the second A: the stored hash still says A,
    but B is in flight, so A is embedded afresh, not reused, and the stores will end at A
    whatever order B and A reach them in."""
    await submit(tracker, [upsert("doc", "Stable text.")])
    await run_worker(redis_client, names, embedder, fast_settings)
    await submit(tracker, [upsert("doc", "Changed text.")])  # B
    await submit(tracker, [upsert("doc", "Stable text.", rev=3)])  # A again
    replica1 = build_embed_worker(
        redis_client, names, embedder, fast_settings.model_copy(update={"consumer_name": "r1"})
    )
    replica2 = build_embed_worker(
        redis_client, names, embedder, fast_settings.model_copy(update={"consumer_name": "r2"})
    )
    holding_b = await replica1.consumer.read_new(1, None)
    revert = await replica2.consumer.read_new(1, None)

    await replica2._process(revert)  # B is still in flight on replica 1
    await replica1._process(holding_b)

    last = [e.payload(DocumentEmbeddedV2) for e in await events(redis_client, names, version=2)]
    assert [(e.text, e.reused, e.chunk_count > 0) for e in last[1:]] == [
        ("Stable text.", False, True),  # the revert: a full embedding, not a reuse
        ("Changed text.", False, True),
    ]
    assert await redis_client.hgetall(names.key("ingest", "inflight")) == {}

    # nothing in flight now, and the register says A: the next A is a reuse of the revert
    await submit(tracker, [upsert("doc", "Stable text.", rev=4)])
    await run_worker(redis_client, names, embedder, fast_settings)
    reuse = (await events(redis_client, names, version=2))[-1].payload(DocumentEmbeddedV2)
    assert reuse.reused and reuse.base_version == last[1].version


async def test_an_entry_settled_twice_is_counted_once(
    redis_client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    tracker: JobTracker,
    fast_settings: ConsumerSettings,
) -> None:
    """Two replicas finish the same reclaimed entry: the second ack changes no count, so
    another command of the document still in flight keeps reuse off."""
    await submit(tracker, [upsert("doc", "Words.")])
    await run_worker(redis_client, names, embedder, fast_settings)
    await submit(tracker, [upsert("doc", "Words.", rev=2)])
    await submit(tracker, [upsert("doc", "Words.", rev=3)])
    slow = build_embed_worker(
        redis_client, names, embedder, fast_settings.model_copy(update={"consumer_name": "slow"})
    )
    fast = build_embed_worker(
        redis_client, names, embedder, fast_settings.model_copy(update={"consumer_name": "fast"})
    )
    [first] = await slow.consumer.read_new(1, None)
    claimed = await redis_client.xclaim(names.ingest, "embedder", "fast", 0, [first[0]])
    assert [as_text(entry_id) for entry_id, _ in claimed] == [first[0]]
    await fast._process([first])
    await slow._process([first])  # the slow replica finishes it too
    counts = await redis_client.hgetall(names.key("ingest", "inflight"))
    assert counts == {b"acme/doc": b"1"}  # rev 3, not read by anyone yet
    await run_worker(redis_client, names, embedder, fast_settings)
    assert await redis_client.hgetall(names.key("ingest", "inflight")) == {}
    assert await redis_client.hgetall(names.key("ingest", "inflight", "entries")) == {}


async def test_an_entry_id_beyond_storable_versions_is_dead_lettered(
    redis_client: redis.Redis, names: StreamNames, embedder: Embedder, tracker: JobTracker
) -> None:
    """Its version would not fit PostgreSQL's bigint: refused here, before the index
    stage could store what the persist stage refuses (issue 10, item 9)."""
    handler = embed_worker.EmbedHandler(redis_client, names, embedder, embedder.chunker(), tracker)
    command = upsert("doc", "Some text.")
    envelope = Envelope.wrap(DOCUMENT_UPSERT, command, source="test", tenant=TENANT, subject="doc")
    body = Decoded(envelope, command)
    [outcome] = await handler([Message("9999999999999-0", names.ingest, {}, body, 1)])
    assert isinstance(outcome, DeadLetter)
    assert isinstance(outcome.error, PoisonMessage)


def reused_flag(ack: Ack) -> bool:
    [publish] = ack.publish
    fields = {
        k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in publish.fields.items()
    }
    return Envelope.from_fields(fields).payload(DocumentEmbedded).reused


async def test_tenants_have_their_own_content_hashes_and_events(
    redis_client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    tracker: JobTracker,
    fast_settings: ConsumerSettings,
) -> None:
    """The same document id of two tenants: separate registers, chunk ids and events; a
    delete of one tenant's copy does not make the other's embedding stale."""
    await submit(tracker, [upsert("doc", "Shared words.")], tenant="t-a")
    await submit(tracker, [upsert("doc", "Shared words.")], tenant="t-b")
    await submit(tracker, [DocumentDelete(job_id="-", document_id="doc")], tenant="t-b")
    await run_worker(redis_client, names, embedder, fast_settings)
    await submit(tracker, [upsert("doc", "Shared words.")], tenant="t-a")
    await run_worker(redis_client, names, embedder, fast_settings)

    evts = await events(redis_client, names)
    assert [(e.tenant, e.type) for e in evts] == [
        ("t-a", DOCUMENT_EMBEDDED),
        ("t-b", DOCUMENT_EMBEDDED),
        ("t-b", DOCUMENT_REMOVED),
        ("t-a", DOCUMENT_EMBEDDED),
    ]
    first, second = evts[0].payload(DocumentEmbedded), evts[1].payload(DocumentEmbedded)
    assert [c.id for c in first.chunks] == ["t-a/doc:0"]
    assert [c.id for c in second.chunks] == ["t-b/doc:0"]
    assert evts[3].payload(DocumentEmbedded).reused  # t-b's delete left t-a's hash alone
    hashes = await redis_client.hgetall(names.key("embed", "hashes"))
    assert hashes[b"t-b/doc"].startswith(b"deleted|")
    assert not hashes[b"t-a/doc"].startswith(b"deleted|")


async def test_a_dead_lettered_reembed_request_fails_the_stage_that_asked(
    redis_client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    tracker: JobTracker,
    fast_settings: ConsumerSettings,
) -> None:
    """The index stage left its mark for a document to the re-embedded event; if the
    request itself is dead-lettered (here: nothing to embed), the job records the
    document failed at the index stage instead of waiting for ever."""
    job_id = await submit(tracker, [upsert("doc", "Words.")])
    await run_worker(redis_client, names, embedder, fast_settings)
    persist_done = tracker.stage_done(job_id, "doc", "persist")
    async with redis_client.pipeline(transaction=True) as pipe:
        await persist_done(pipe)
        await pipe.execute()
    request = DocumentReembed(
        job_id=job_id,
        document_id="doc",
        version=version_text(stream_id_to_version("8000000000000-0")),
        text=" \n ",
        requested_by="index",
    )
    envelope = Envelope.wrap(
        DOCUMENT_REEMBED, request, source="embedstream.index", tenant=TENANT, subject="doc"
    )
    await redis_client.xadd(names.ingest, envelope.to_fields())  # type: ignore[arg-type]

    stats = await run_worker(redis_client, names, embedder, fast_settings)

    assert stats.dead_lettered == 1
    status = await job(tracker, job_id)
    assert status.state == "failed"
    assert status.items[0].stages == {"embed": "done", "persist": "done", "index": "failed"}
