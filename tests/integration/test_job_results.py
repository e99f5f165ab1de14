"""The results stream's envelopes on the real Redis: built by Python's ``Envelope`` and
written by the MARK_STAGE Lua in the ack's MULTI/EXEC, carrying the job's tenant and the
trace context of the request that made the job."""

from __future__ import annotations

import pytest
import redis.asyncio as redis

from embedstream.errors import PoisonMessage
from embedstream.jobs import scripts
from embedstream.jobs.results import RESULTS_SOURCE, JobContext
from embedstream.jobs.tracker import JobTracker
from embedstream.metrics.queues import QueueCollector
from embedstream.schemas.envelope import SCHEMA_VERSION, Envelope
from embedstream.schemas.events import (
    DOCUMENT_DELETED,
    DOCUMENT_DELETED_V2,
    JOB_COMPLETED,
    JOB_FAILED,
    DocumentDeletedV2,
    JobCompleted,
    JobFailed,
)
from embedstream.streams.names import StreamNames, stream_id_to_version
from embedstream.streams.status import collect_status
from tests.conftest import REDIS_BACKENDS
from tests.support.builders import TENANT, TRACEPARENT, apply_ops, submit_job

pytestmark = pytest.mark.integration


@pytest.fixture(params=REDIS_BACKENDS)
def redis_backend(request: pytest.FixtureRequest) -> str:
    """Every test on the single Redis and on a real local Redis Cluster."""
    backend: str = request.param
    return backend


async def results(client: redis.Redis, names: StreamNames) -> list[Envelope]:
    return [Envelope.from_fields(fields) for _, fields in await client.xrange(names.results)]


async def test_the_job_keeps_the_requests_traceparent_and_its_result_carries_it(
    redis_client: redis.Redis, names: StreamNames, tracker: JobTracker
) -> None:
    job_id = await submit_job(tracker, {"a": "upsert", "b": "upsert"}, traceparent=TRACEPARENT)
    status = await tracker.status(job_id)
    assert status is not None and status.traceparent == TRACEPARENT
    context = JobContext(TENANT, TRACEPARENT)
    for stage in ("index", "persist"):  # as the stages ack: the message's tenant and trace
        await apply_ops(redis_client, [tracker.stage_done(job_id, "a", stage, job=context)])
        await apply_ops(redis_client, [tracker.stage_done(job_id, "b", stage, job=context)])

    [done] = await results(redis_client, names)
    assert done.type == JOB_COMPLETED
    assert done.traceparent == TRACEPARENT
    assert (done.tenant, done.subject, done.source) == (TENANT, job_id, RESULTS_SOURCE)
    assert done.schemaversion == SCHEMA_VERSION
    payload = done.payload(JobCompleted)
    assert (payload.job_id, payload.documents) == (job_id, 2)
    assert payload.completed_at == done.time  # the Lua's data, the Python's attributes


async def test_a_dead_letter_fails_the_job_with_the_records_tenant_and_trace(
    redis_client: redis.Redis, names: StreamNames, tracker: JobTracker
) -> None:
    """A dead-lettered entry may be undecodable: its job's tenant and trace context are
    read from the job record."""
    job_id = await submit_job(tracker, {"a": "upsert"}, traceparent=TRACEPARENT)
    [(_, fields)] = await redis_client.xrange(names.ingest)
    broken = {b"data": fields[b"data"], b"ce": b"not json"}
    ops = tracker.dead_letter_ops("embed")(broken, PoisonMessage("undecodable"))
    await apply_ops(redis_client, ops)

    [failed] = await results(redis_client, names)
    assert failed.type == JOB_FAILED
    assert (failed.tenant, failed.traceparent, failed.subject) == (TENANT, TRACEPARENT, job_id)
    [failure] = failed.payload(JobFailed).failures
    assert (failure.document_id, failure.stage) == ("a", "embed")
    assert failure.error.startswith("invalid_message:")


async def test_a_finished_delete_announces_itself_in_each_type_version(
    redis_client: redis.Redis, names: StreamNames, tracker: JobTracker
) -> None:
    job_id = await submit_job(tracker, {"doc": "delete"}, traceparent=TRACEPARENT)
    [(entry_id, _)] = await redis_client.xrange(names.ingest)
    version = stream_id_to_version(entry_id)
    for stage in ("index", "persist"):
        op = tracker.stage_done(
            job_id, "doc", stage, job=JobContext(TENANT), deleted_version=version
        )
        await apply_ops(redis_client, [op])

    events = await results(redis_client, names)
    assert [e.type for e in events] == [DOCUMENT_DELETED, DOCUMENT_DELETED_V2, JOB_COMPLETED]
    for event in events[:2]:
        assert (event.subject, event.tenant, event.source) == ("doc", TENANT, RESULTS_SOURCE)
        assert event.schemaversion == SCHEMA_VERSION
    assert events[1].payload(DocumentDeletedV2).version == f"{version:020d}"


async def test_a_mark_of_another_tenant_does_not_count_for_the_job(
    redis_client: redis.Redis, names: StreamNames, tracker: JobTracker
) -> None:
    job_id = await submit_job(tracker, {"a": "upsert"}, tenant="t-a")
    for stage in ("index", "persist"):
        op = tracker.stage_done(job_id, "a", stage, job=JobContext("t-b"))
        await apply_ops(redis_client, [op])
    status = await tracker.status(job_id)
    assert status is not None
    assert (status.state, status.done, status.items[0].stages) == ("queued", 0, {})
    assert await results(redis_client, names) == []


def test_the_lua_writes_no_envelope_attributes_of_its_own() -> None:
    """The envelopes come from Python (``jobs/results.py``): no schema version, source
    or CloudEvents version spelt in the script."""
    for literal in ("schemaversion", "specversion", "datacontenttype", "embedstream"):
        assert literal not in scripts.MARK_STAGE


async def test_finished_jobs_are_counted_once_each_for_the_metrics(
    redis_client: redis.Redis, names: StreamNames, tracker: JobTracker
) -> None:
    """``embedstream_jobs_total{status}``: the script counts a job when it finishes,
    once, however often a stage's mark is redelivered; the count outlives the job's keys."""
    context = JobContext(TENANT)
    completed = await submit_job(tracker, {"a": "upsert", "b": "upsert"})
    for _ in range(2):  # the second round is a redelivery: nothing more is counted
        for stage in ("index", "persist"):
            for doc in ("a", "b"):
                await apply_ops(
                    redis_client, [tracker.stage_done(completed, doc, stage, job=context)]
                )
    failed = await submit_job(tracker, {"c": "upsert"})
    for _ in range(2):
        op = tracker.stage_failed(failed, "c", "index", "boom", job=context)
        await apply_ops(redis_client, [op])
    unfinished = await submit_job(tracker, {"d": "upsert"})
    await apply_ops(redis_client, [tracker.stage_done(unfinished, "d", "index", job=context)])

    assert await redis_client.ttl(names.job_counts) == -1  # never expires with the jobs
    report = await collect_status(redis_client, names)
    assert (report.jobs_completed, report.jobs_failed) == (1, 1)
    samples = {
        sample.labels["status"]: sample.value
        for metric in QueueCollector(report, 60_000).collect()
        if metric.name == "embedstream_jobs"
        for sample in metric.samples
        if sample.name == "embedstream_jobs_total"
    }
    assert samples == {"completed": 1, "failed": 1}
