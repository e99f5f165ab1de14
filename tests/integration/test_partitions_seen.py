"""With partitions, what operators and downstream services read sees every partition:
``embedstream status`` and the queue gauges list each partition's streams with their
lag, the dead-letter tools list and filter letters from every partition, and a
subscriber of ``embedded`` receives the events of every partition. On the single Redis
and on a local Redis Cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as redis
from prometheus_client.parser import text_string_to_metric_families

from embedstream.config import ConsumerSettings
from embedstream.jobs.tracker import JobTracker, Submission
from embedstream.metrics.queues import QueueMetrics
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import DocumentEmbedded
from embedstream.streams.dlq_query import DeadLetterFilter, find_dead_letters
from embedstream.streams.init import init_streams
from embedstream.streams.messages import DeadLetter, Message, Outcome
from embedstream.streams.names import EMBED, StreamNames, partition_of
from embedstream.streams.runner import StreamWorker
from embedstream.streams.status import collect_status
from embedstream.streams.status_cache import StatusCache
from embedstream.subscribe import Subscriber
from tests.conftest import REDIS_BACKENDS
from tests.support.builders import TENANT, command_envelope, embedded_event, publish

pytestmark = pytest.mark.integration

PARTITIONS = 3
DOCS = [f"doc-{n}" for n in range(12)]


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


def per_partition(documents: Sequence[str]) -> dict[int, int]:
    counts = dict.fromkeys(range(PARTITIONS), 0)
    for doc in documents:
        counts[partition_of(TENANT, doc, PARTITIONS)] += 1
    assert all(counts.values()), counts  # the documents cover every partition
    return counts


async def submit(redis_client: redis.Redis, names: StreamNames) -> str:
    tracker = JobTracker(redis_client, names)
    job_id = uuid.uuid4().hex
    subs = [Submission(d, "upsert", command_envelope(job_id, d, "upsert")) for d in DOCS]
    await tracker.submit(job_id, subs, tenant=TENANT)
    return job_id


async def test_status_and_queue_gauges_show_every_partitions_lag(
    redis_client: redis.Redis, names: StreamNames, clean: None
) -> None:
    await init_streams(redis_client, names)
    await submit(redis_client, names)
    expected = {names.at(k).ingest: n for k, n in per_partition(DOCS).items()}

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

    async def handler(messages: Sequence[Message[Envelope]]) -> Sequence[Outcome]:
        return [DeadLetter(ValueError("refused")) for _ in messages]

    for view in names.views():
        worker = StreamWorker(redis_client, view, view.ingest, EMBED.group, handler, fast_settings)
        await asyncio.wait_for(worker.run(burst=True), 30)

    page = await find_dead_letters(redis_client, names, DeadLetterFilter(), limit=100)
    assert sorted(letter.meta["stream"] for letter in page.items) == sorted(
        names.for_document(TENANT, doc).ingest for doc in DOCS
    )
    for k, n in per_partition(DOCS).items():  # filtered by one partition's stream
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
        names.at(k).ingest: n for k, n in per_partition(DOCS).items()
    }


async def test_a_subscriber_of_embedded_reads_every_partition(
    redis_client: redis.Redis,
    names: StreamNames,
    clean: None,
    fast_settings: ConsumerSettings,
) -> None:
    for doc in DOCS:
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
    assert sorted(got) == sorted(DOCS)
