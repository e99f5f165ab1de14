"""The subscriber kit and the example downstream service on the real Redis, with events
written by the real job bookkeeping (``JobTracker`` and its MARK_STAGE Lua)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as redis
from examples.downstream.service import build_subscriber
from structlog.testing import capture_logs

from embedstream.config import ConsumerSettings
from embedstream.errors import PermanentError, PoisonMessage
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.envelope import Envelope, attributes_of
from embedstream.schemas.events import DocumentDeletedV2, DocumentEmbedded, JobCompleted, JobFailed
from embedstream.streams.names import StreamNames
from embedstream.subscribe import Subscriber
from tests.conftest import REDIS_URL
from tests.contract.providers import ingest_entries, submit_delete, submit_upserts
from tests.support.builders import apply_ops

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def finish(client: redis.Redis, names: StreamNames, job_id: str, *docs: str) -> None:
    tracker = JobTracker(client, names)
    for doc in docs:
        for stage in ("index", "persist"):
            await apply_ops(client, [tracker.stage_done(job_id, doc, stage)])


async def produce_jobs(client: redis.Redis, names: StreamNames) -> None:
    """One completed job (2 documents), one failed job (1 of 2 failed), one delete."""
    tracker = JobTracker(client, names)
    ok = await submit_upserts(client, names, "a", "b")
    await finish(client, names, ok, "a", "b")
    failing = await submit_upserts(client, names, "c", "d")
    await finish(client, names, failing, "c")
    fields = (await ingest_entries(client, names))["d"][1]
    await apply_ops(client, tracker.dead_letter_ops("index")(fields, PoisonMessage("bad vector")))
    removing = await submit_delete(client, names, "a")
    version = (await ingest_entries(client, names))["a"][0]
    for stage in ("index", "persist"):
        await apply_ops(client, [tracker.stage_done(removing, "a", stage, deleted_version=version)])


async def test_example_service_counts_jobs_and_records_failures(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    await produce_jobs(redis_client, names)
    sub, stats = build_subscriber(redis_client, names.prefix, settings=fast_settings)
    run = await asyncio.wait_for(sub.run(burst=True), 30)

    assert (stats.completed, stats.failed, stats.deleted, stats.documents) == (2, 1, 1, 5)
    assert stats.failures == [
        {
            "document_id": "d",
            "stage": "index",
            "error": "invalid_message: the message is malformed or failed validation",
        }
    ]
    # 5: document.deleted.v1, the v1 twin of the v2 event it handles, is acked unhandled
    assert (run.acked, run.dead_lettered) == (5, 0)
    assert await redis_client.xlen(names.dlq) == 0
    version = (await ingest_entries(redis_client, names))["a"][0]
    assert stats.last_deleted == {"acme/a": f"{version:020d}"}  # exact, as text

    # another service, another group: it gets every event too; the first gets nothing new
    other, other_stats = build_subscriber(
        redis_client, names.prefix, group="audit", settings=fast_settings
    )
    await asyncio.wait_for(other.run(burst=True), 30)
    assert (other_stats.completed, other_stats.failed) == (2, 1)
    again = await asyncio.wait_for(sub.run(burst=True), 30)
    assert again.acked == 0


async def test_handler_errors_retry_then_dead_letter(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    ok = await submit_upserts(redis_client, names, "a")
    await finish(redis_client, names, ok, "a")
    await submit_upserts(redis_client, names, "b")
    tracker = JobTracker(redis_client, names)
    fields = (await ingest_entries(redis_client, names))["b"][1]
    await apply_ops(redis_client, tracker.dead_letter_ops("persist")(fields, PoisonMessage("x")))

    attempts: list[str] = []
    sub = Subscriber(redis_client, names.prefix, "svc", settings=fast_settings)

    @sub.on(JobCompleted)
    async def flaky(event: JobCompleted, envelope: Envelope) -> None:
        attempts.append(envelope.id)
        if len(attempts) == 1:
            raise ConnectionError("downstream database away")

    @sub.on("job.failed.v1")
    def refuse(event: JobFailed, envelope: Envelope) -> None:
        raise PermanentError(f"cannot record job {event.job_id}")

    stats = await asyncio.wait_for(sub.run(burst=True), 30)

    assert len(attempts) == 2 and attempts[0] == attempts[1]  # at least once: redelivered
    assert (stats.acked, stats.retried, stats.dead_lettered) == (1, 1, 1)
    [(_, letter)] = await redis_client.xrange(names.dlq)
    assert attributes_of(letter)["type"] == "job.failed.v1"
    assert letter[b"dlq_group"] == b"svc"
    assert letter[b"dlq_error"].startswith(b"cannot record job")


async def test_handler_that_keeps_failing_is_dead_lettered_after_max_deliveries(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    job = await submit_upserts(redis_client, names, "a")
    await finish(redis_client, names, job, "a")
    calls = 0
    sub = Subscriber(redis_client, names.prefix, "svc", settings=fast_settings)

    @sub.on(JobCompleted)
    async def broken(event: JobCompleted, envelope: Envelope) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug")

    await asyncio.wait_for(sub.run(burst=True), 30)
    assert calls == fast_settings.max_deliveries
    [(_, letter)] = await redis_client.xrange(names.dlq)
    assert letter[b"dlq_error"] == b"bug"
    assert letter[b"dlq_attempts"] == str(fast_settings.max_deliveries).encode()


@pytest.mark.parametrize(("unknown", "dead_lettered"), [("ignore", 0), ("dead_letter", 2)])
async def test_events_without_a_handler_are_skipped_or_dead_lettered(
    unknown: str,
    dead_lettered: int,
    redis_client: redis.Redis,
    names: StreamNames,
    fast_settings: ConsumerSettings,
) -> None:
    job = await submit_delete(redis_client, names, "a")
    version = (await ingest_entries(redis_client, names))["a"][0]
    tracker = JobTracker(redis_client, names)
    for stage in ("index", "persist"):
        await apply_ops(
            redis_client, [tracker.stage_done(job, "a", stage, deleted_version=version)]
        )
    seen: list[str] = []
    sub = Subscriber(
        redis_client,
        names.prefix,
        "svc",
        settings=fast_settings,
        unknown=unknown,  # type: ignore[arg-type]
    )
    sub.on(JobCompleted)(lambda event, envelope: seen.append(event.job_id))

    stats = await asyncio.wait_for(sub.run(burst=True), 30)
    assert seen == [job]
    assert stats.dead_lettered == dead_lettered == await redis_client.xlen(names.dlq)
    if dead_lettered:
        letters = [letter for _, letter in await redis_client.xrange(names.dlq)]
        types = ["document.deleted.v1", "document.deleted.v2"]
        assert [attributes_of(letter)["type"] for letter in letters] == types
        for letter, type_ in zip(letters, types, strict=True):
            assert f"no handler for type '{type_}'".encode() in letter[b"dlq_error"]


async def test_subscribing_to_the_embedded_stream(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    sub = Subscriber(
        redis_client, names.prefix, "vectors", settings=fast_settings, stream="embedded"
    )
    with pytest.raises(ValueError, match="pass stream='results'"):
        sub.on(JobCompleted)
    with pytest.raises(KeyError, match="unknown message type"):
        sub.on("document.embedded.v9")
    got: list[int] = []
    sub.on(DocumentEmbedded)(lambda event, envelope: got.append(event.dim))
    event = DocumentEmbedded(
        job_id="j",
        document_id="d",
        version=1,
        content_hash="h",
        model="m",
        dim=4,
        text="t",
        chunk_count=0,
        reused=True,
        chunks=[],
    )
    envelope = Envelope.wrap(
        "document.embedded.v1", event, source="tests", tenant="acme", subject="d"
    )
    await redis_client.xadd(names.embedded, envelope.to_fields())  # type: ignore[arg-type]
    await asyncio.wait_for(sub.run(burst=True), 30)
    assert got == [4]


async def test_run_until_stop(
    redis_client: redis.Redis, names: StreamNames, fast_settings: ConsumerSettings
) -> None:
    """A subscriber built from a URL owns its client; ``stop`` ends a (non-burst) run."""
    sub = Subscriber(REDIS_URL, names.prefix, "svc", "replica-1", fast_settings)
    handled = asyncio.Event()
    sub.on(JobCompleted)(lambda event, envelope: handled.set())
    stop = asyncio.Event()
    running = asyncio.create_task(sub.run(stop))
    job = await submit_upserts(redis_client, names, "a")
    await finish(redis_client, names, job, "a")
    await asyncio.wait_for(handled.wait(), 10)
    stop.set()
    stats = await asyncio.wait_for(running, 10)
    assert stats.acked == 1
    assert sub.settings.consumer_name == "replica-1"


def test_example_service_runs_until_sigterm(prefix: str) -> None:
    async def produce() -> None:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            await produce_jobs(client, StreamNames(prefix))
        finally:
            await client.aclose()

    async def cleanup() -> None:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    asyncio.run(produce())
    env = {
        **os.environ,
        "EMBEDSTREAM_REDIS_URL": REDIS_URL,
        "EMBEDSTREAM_STREAM_PREFIX": prefix,
        "EMBEDSTREAM_BLOCK_MS": "100",
        # the checkout first, then whatever the caller had (a source tree it tests)
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.downstream.service"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        log = ""
        assert proc.stderr is not None
        while "job failed" not in log and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            log += line
        assert "job failed" in log, log
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        assert (summary["completed"], summary["failed"], summary["deleted"]) == (2, 1, 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        asyncio.run(cleanup())


def test_handlers_for_both_type_versions_of_one_event_are_warned_about() -> None:
    """v1 and v2 of an event are the same event twice: the kit says so."""
    sub = Subscriber("redis://unused", "embedstream", "svc")
    with capture_logs() as logs:
        sub.on(DocumentDeletedV2)(lambda event, envelope: None)
        sub.on(JobCompleted)(lambda event, envelope: None)
    assert not [e for e in logs if e["log_level"] == "warning"]
    with capture_logs() as logs:
        sub.on("document.deleted.v1")(lambda event, envelope: None)
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning["type"] == "document.deleted.v1"
    assert warning["also"] == ["document.deleted.v2"]
