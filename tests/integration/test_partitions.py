"""Partitioned streams on the single Redis and on a local Redis Cluster: where commands
go, a submit that stops half way and is retried, the embed stage's acks over several
partitions, dead-letter replay into a partition, the refusal to change the number of partitions
while work is pending, waits for replicas that do not spend deliveries, and status,
queue gauges, dead-letter tools and subscribers that see every partition."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as redis
from prometheus_client.parser import text_string_to_metric_families

from embedstream.adapters.redis_client import ReplicaAck, ReplicationTimeout
from embedstream.config import ConsumerSettings
from embedstream.jobs.tracker import JobTracker, Submission
from embedstream.metrics.queues import QueueMetrics
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import DocumentEmbedded
from embedstream.streams.dlq import replay_dead_letter
from embedstream.streams.dlq_query import DeadLetterFilter, find_dead_letters
from embedstream.streams.heartbeat import Heartbeat
from embedstream.streams.init import init_streams
from embedstream.streams.messages import DeadLetter, Message, Outcome
from embedstream.streams.names import EMBED, StreamNames, partition_of
from embedstream.streams.partitions import PartitionsChanged, check_partitions
from embedstream.streams.runner import StreamWorker
from embedstream.streams.status import collect_status
from embedstream.streams.status_cache import StatusCache
from embedstream.subscribe import Subscriber
from tests.conftest import REDIS_BACKENDS
from tests.support.builders import TENANT, apply_ops, command_envelope, embedded_event, publish

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture(params=REDIS_BACKENDS)
def redis_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def names(prefix: str, redis_backend: str) -> StreamNames:
    return StreamNames(prefix, cluster=redis_backend == "cluster", partitions=PARTITIONS)


@pytest.fixture
async def clean(redis_client: redis.Redis, names: StreamNames) -> Any:
    yield
    for pattern in names.patterns():
        async for key in redis_client.scan_iter(match=pattern, count=1000):
            await redis_client.delete(key)


def submissions(job_id: str, documents: Sequence[str]) -> list[Submission]:
    return [Submission(d, "upsert", command_envelope(job_id, d, "upsert")) for d in documents]


DOCS = [f"doc-{n}" for n in range(30)]


async def entries_by_stream(client: redis.Redis, names: StreamNames) -> dict[str, list[str]]:
    """Stream -> the documents of its commands, in stream order."""
    out: dict[str, list[str]] = {}
    for stream in names.ingest_streams():
        rows = await client.xrange(stream)
        out[stream] = [Envelope.from_fields(f).subject or "" for _, f in rows]
    return out


async def dead_letter_every_partition(
    client: redis.Redis,
    names: StreamNames,
    settings: ConsumerSettings,
    reason: str,
    **worker_options: Any,
) -> None:
    """An embed-like worker per partition that dead-letters every command it reads with
    ``reason``, run until its partition has nothing left (``worker_options``: e.g. the job
    bookkeeping's ``dead_letter_ops``, a ``replica_ack``)."""

    async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        return [DeadLetter(ValueError(reason)) for _ in messages]

    for view in names.views():
        worker = StreamWorker(
            client, view, view.ingest, EMBED.group, handler, settings, **worker_options
        )
        await asyncio.wait_for(worker.run(burst=True), 60)


async def test_commands_go_to_their_documents_partitions(
    redis_client: redis.Redis, names: StreamNames, clean: None
) -> None:
    tracker = JobTracker(redis_client, names)
    job_id = uuid.uuid4().hex
    submitted = await tracker.submit(job_id, submissions(job_id, DOCS), tenant=TENANT)

    assert submitted.created
    by_stream = await entries_by_stream(redis_client, names)
    for stream, docs in by_stream.items():
        view = names.view_of_stream(stream)
        assert view is not None
        assert all(partition_of(TENANT, d, PARTITIONS) == view.partition for d in docs)
    assert sorted(d for docs in by_stream.values() for d in docs) == sorted(DOCS)
    assert all(by_stream.values())  # 30 documents fill every one of 3 partitions
    status = await tracker.status(job_id)
    assert status is not None and status.documents == len(DOCS)
    assert all(item.version for item in status.items)  # each has its entry id


async def test_a_submit_stopped_half_way_is_finished_by_its_retry_without_duplicates(
    redis_client: redis.Redis, names: StreamNames, clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt dies after one partition's commands are in (no 202 was sent);
    the retry with the same Idempotency-Key (and a new job id, as the API makes) adds
    the rest, once, to the first attempt's job."""
    tracker = JobTracker(redis_client, names)
    calls = 0
    enqueue = tracker._enqueue

    async def dies_after_the_first_partition(*args: Any) -> dict[str, str]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("the API process died here")
        return await enqueue(*args)

    monkeypatch.setattr(tracker, "_enqueue", dies_after_the_first_partition)
    first = uuid.uuid4().hex
    with pytest.raises(ConnectionError):
        await tracker.submit(first, submissions(first, DOCS), tenant=TENANT, idempotency_key="k")
    monkeypatch.undo()
    partial = sum(len(d) for d in (await entries_by_stream(redis_client, names)).values())
    assert 0 < partial < len(DOCS)

    retry = uuid.uuid4().hex
    submitted = await tracker.submit(
        retry, submissions(retry, DOCS), tenant=TENANT, idempotency_key="k"
    )

    assert (submitted.job_id, submitted.created) == (first, False)
    by_stream = await entries_by_stream(redis_client, names)
    assert Counter(d for docs in by_stream.values() for d in docs) == Counter(DOCS)
    for stream in names.ingest_streams():  # every command names the first attempt's job
        for _, fields in await redis_client.xrange(stream):
            assert json.loads(Envelope.from_fields(fields).data)["job_id"] == first
    status = await tracker.status(first)
    assert status is not None and all(item.version for item in status.items)
    again = await tracker.submit(
        retry, submissions(retry, DOCS), tenant=TENANT, idempotency_key="k"
    )
    assert (again.job_id, again.created) == (first, False)


async def test_stage_marks_and_dead_letters_over_partitions_complete_the_job(
    redis_client: redis.Redis,
    names: StreamNames,
    clean: None,
    fast_settings: ConsumerSettings,
) -> None:
    """An embed-like worker per partition dead-letters every command (with the job
    bookkeeping's dead-letter ops): the job fails once, with every document, whichever
    slot each partition is in; nothing is left pending."""
    tracker = JobTracker(redis_client, names)
    job_id = uuid.uuid4().hex
    await tracker.submit(job_id, submissions(job_id, DOCS[:9]), tenant=TENANT)
    await dead_letter_every_partition(
        redis_client,
        names,
        fast_settings,
        "no",
        dead_letter_ops=tracker.dead_letter_ops(EMBED.name),
    )

    status = await tracker.status(job_id)
    assert status is not None
    assert (status.state, status.failed) == ("failed", 9)
    assert await redis_client.xlen(names.dlq) == 9
    for stream in names.ingest_streams():
        assert (await redis_client.xpending(stream, EMBED.group))["pending"] == 0
    results = await redis_client.xrange(names.results)
    assert [Envelope.from_fields(f).type for _, f in results] == ["job.failed.v1"]

    # replayed into its own partition's stream, counted in flight there
    [(letter_id, raw)] = await redis_client.xrange(names.dlq, count=1)
    stream = raw[b"dlq_stream"].decode()
    replayed = await replay_dead_letter(redis_client, names, letter_id.decode())
    assert replayed is not None and replayed[0] == stream
    view = names.view_of_stream(stream)
    assert view is not None
    counts = await redis_client.hgetall(view.key("ingest", "inflight"))
    assert sum(int(v) for v in counts.values()) >= 1


async def test_stage_done_marks_from_every_partition_complete_the_job(
    redis_client: redis.Redis, names: StreamNames, clean: None
) -> None:
    tracker = JobTracker(redis_client, names)
    job_id = uuid.uuid4().hex
    await tracker.submit(job_id, submissions(job_id, DOCS[:6]), tenant=TENANT)
    for doc in DOCS[:6]:
        for stage in ("index", "persist"):
            await apply_ops(redis_client, [tracker.stage_done(job_id, doc, stage)])
    status = await tracker.status(job_id)
    assert status is not None and (status.state, status.done) == ("completed", 6)


async def test_a_change_of_partitions_is_refused_while_work_is_pending(
    redis_client: redis.Redis, names: StreamNames, clean: None
) -> None:
    one = dataclasses.replace(names, partitions=1)
    await check_partitions(redis_client, names)  # records 3
    tracker = JobTracker(redis_client, names)
    job_id = uuid.uuid4().hex
    await tracker.submit(job_id, submissions(job_id, DOCS[:5]), tenant=TENANT)
    for stream, group in names.stage_groups():
        await redis_client.xgroup_create(stream, group, "0", mkstream=True)

    with pytest.raises(PartitionsChanged, match="EMBEDSTREAM_PARTITIONS=3"):
        await check_partitions(redis_client, one)

    # drained: every group read and acked everything
    for stream, group in names.stage_groups():
        reply: Any = await redis_client.xreadgroup(group, "c", {stream: ">"}, count=100)
        if not reply:
            continue
        # a reply as redis-py converts it, or raw ({stream: entries}) from a cluster client
        rows = next(iter(reply.values())) if isinstance(reply, dict) else [e for _, e in reply]
        if rows and isinstance(reply, list):
            rows = rows[0]
        ids = [row[0] for row in rows]
        if ids:
            await redis_client.xack(stream, group, *ids)
    await check_partitions(redis_client, one)
    assert await redis_client.get(names.partitions_key) == b"1"


@dataclasses.dataclass(frozen=True)
class ReplicasShort(ReplicaAck):
    """``EMBEDSTREAM_REDIS_MIN_REPLICAS_ACK=1`` on a cluster whose slots are short of a
    replica for the first ``failures`` waits (a failover under way): WAIT answers too
    few, as Redis does then; after that the real WAIT on the cluster's replicas."""

    replicas: int = 1
    timeout_ms: int = 100
    failures: int = 5
    waits: list[int] = dataclasses.field(default_factory=list)  # one item per wait

    async def wait(self, client: redis.Redis, key: str) -> None:
        self.waits.append(1)
        if len(self.waits) <= self.failures:
            raise ReplicationTimeout(self.replicas, 0, self.timeout_ms)
        await super().wait(client, key)


@pytest.mark.parametrize("redis_backend", ["cluster"], indirect=True)
async def test_replicas_short_for_a_while_delay_the_ack_without_spending_deliveries(
    redis_client: redis.Redis,
    names: StreamNames,
    clean: None,
    fast_settings: ConsumerSettings,
) -> None:
    """With durable acks on a cluster with partitions, a worker's writes in the job's
    slot are waited for on the replicas before its XACK. While the slot is short of
    replicas (longer than the visibility timeout here), the worker keeps its entries
    leased and waits: they are settled once, on their first delivery, not redelivered
    until the delivery cap dead-letters them for the servers' state."""
    tracker = JobTracker(redis_client, names)
    job_id = uuid.uuid4().hex
    await tracker.submit(job_id, submissions(job_id, DOCS[:9]), tenant=TENANT)
    short = ReplicasShort(failures=5)
    await dead_letter_every_partition(
        redis_client,
        names,
        fast_settings,
        "refused by the handler",
        dead_letter_ops=tracker.dead_letter_ops(EMBED.name),
        replica_ack=short,
    )

    assert len(short.waits) > short.failures
    letters = await redis_client.xrange(names.dlq)
    assert len(letters) == 9
    # each settled on its first delivery, with the handler's reason
    assert {(f[b"dlq_attempts"], f[b"dlq_error"]) for _, f in letters} == {
        (b"1", b"refused by the handler")
    }
    for stream in names.ingest_streams():
        assert (await redis_client.xpending(stream, EMBED.group))["pending"] == 0
    status = await tracker.status(job_id)
    assert status is not None and (status.state, status.failed) == ("failed", 9)
    results = await redis_client.xrange(names.results)
    assert [Envelope.from_fields(f).type for _, f in results] == ["job.failed.v1"]


class StepClock:
    """A clock for the liveness probe that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("redis_backend", ["cluster"], indirect=True)
async def test_a_worker_waiting_for_replicas_stays_live(
    redis_client: redis.Redis,
    names: StreamNames,
    clean: None,
    fast_settings: ConsumerSettings,
) -> None:
    """Every slot held by a batch waiting for replicas, minutes on the probe's clock:
    the liveness probe sees progress at each answered WAIT, so the pod is not restarted
    (a restart brings no replica back and spends the entries' deliveries)."""
    tracker = JobTracker(redis_client, names)
    job_id = uuid.uuid4().hex
    await tracker.submit(job_id, submissions(job_id, DOCS[:9]), tenant=TENANT)
    clock = StepClock()
    heartbeat = Heartbeat(clock)
    stalls: list[object] = []

    @dataclasses.dataclass(frozen=True)
    class SlowReplicas(ReplicasShort):
        async def wait(self, client: redis.Redis, key: str) -> None:
            stalls.append(heartbeat.stall(bound_s=50))
            clock.now += 30  # each WAIT answers "too few" after its timeout
            await super().wait(client, key)

    settings = fast_settings.model_copy(update={"max_in_flight": 1, "batch_size": 100})
    short = SlowReplicas(failures=6)
    await dead_letter_every_partition(
        redis_client,
        names,
        settings,
        "refused",
        dead_letter_ops=tracker.dead_letter_ops(EMBED.name),
        replica_ack=short,
        heartbeat=heartbeat,
    )
    assert len(short.waits) > short.failures  # 6 x 30 s waited for the replicas
    assert stalls and all(stall is None for stall in stalls), stalls
    assert await redis_client.xlen(names.dlq) == 9


# -- what operators and downstream services read sees every partition ------------------
# `embedstream status` and the queue gauges list each partition's streams with their lag,
# the dead-letter tools list and filter letters from every partition, and a subscriber of
# `embedded` receives the events of every partition.

SEEN = DOCS[:12]


def per_partition(documents: Sequence[str]) -> dict[int, int]:
    counts = dict.fromkeys(range(PARTITIONS), 0)
    for doc in documents:
        counts[partition_of(TENANT, doc, PARTITIONS)] += 1
    assert all(counts.values()), counts  # the documents cover every partition
    return counts


async def submit(redis_client: redis.Redis, names: StreamNames) -> None:
    job_id = uuid.uuid4().hex
    await JobTracker(redis_client, names).submit(job_id, submissions(job_id, SEEN), tenant=TENANT)


async def test_status_and_queue_gauges_show_every_partitions_lag(
    redis_client: redis.Redis, names: StreamNames, clean: None
) -> None:
    await init_streams(redis_client, names)
    await submit(redis_client, names)
    expected = {names.at(k).ingest: n for k, n in per_partition(SEEN).items()}

    report = await collect_status(redis_client, names)
    seen = {view.stream for view in report.streams}
    assert set(names.pipeline_streams()) <= seen
    lag = {
        view.stream: group.lag
        for view in report.streams
        for group in view.groups
        if group.name == EMBED.group and view.stream in expected
    }
    assert lag == expected

    metrics = QueueMetrics(StatusCache(redis_client, names, ttl_s=0), active_idle_ms=60_000)
    text = (await metrics.exposition()).decode()
    gauges = {
        sample.labels["stream"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "embedstream_group_lag"
        for sample in family.samples
        if sample.labels.get("group") == EMBED.group
    }
    assert gauges == {stream: float(n) for stream, n in expected.items()}


async def test_dead_letter_tools_see_every_partition(
    redis_client: redis.Redis,
    names: StreamNames,
    clean: None,
    fast_settings: ConsumerSettings,
) -> None:
    await submit(redis_client, names)
    await dead_letter_every_partition(redis_client, names, fast_settings, "refused")

    page = await find_dead_letters(redis_client, names, DeadLetterFilter(), limit=100)
    assert sorted(letter.meta["stream"] for letter in page.items) == sorted(
        names.for_document(TENANT, doc).ingest for doc in SEEN
    )
    for k, n in per_partition(SEEN).items():  # filtered by one partition's stream
        stream = names.at(k).ingest
        only = await find_dead_letters(redis_client, names, DeadLetterFilter(stream=stream))
        assert len(only.items) == n
    report = await collect_status(redis_client, names)
    dead = {
        view.stream: group.dead_letters
        for view in report.streams
        for group in view.groups
        if group.name == EMBED.group
    }
    assert {s: d for s, d in dead.items() if d} == {
        names.at(k).ingest: n for k, n in per_partition(SEEN).items()
    }


async def test_a_subscriber_of_embedded_reads_every_partition(
    redis_client: redis.Redis,
    names: StreamNames,
    clean: None,
    fast_settings: ConsumerSettings,
) -> None:
    for doc in SEEN:
        stream = names.for_document(TENANT, doc).embedded
        await publish(redis_client, stream, embedded_event("j", doc, 1))
    sub = Subscriber(
        redis_client,
        names.prefix,
        "vectors",
        settings=fast_settings,
        stream="embedded",
        partitions=PARTITIONS,
    )
    got: list[str] = []
    sub.on(DocumentEmbedded)(lambda event, envelope: got.append(event.document_id))
    await asyncio.wait_for(sub.run(burst=True), 30)
    assert sorted(got) == sorted(SEEN)
