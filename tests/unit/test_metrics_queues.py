"""The queue gauges of one status reading, as Prometheus reads them."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from embedstream.metrics.queues import QueueCollector
from embedstream.streams.status import ConsumerView, GroupView, StatusReport, StreamView
from tests.support.metrics import ALLOWED_LABELS, Scrape


def exposition(report: StatusReport | None, active_idle_ms: int = 60_000) -> Scrape:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(report, active_idle_ms))
    return Scrape.parse(generate_latest(registry).decode())


def report() -> StatusReport:
    embedder = GroupView(
        name="embedder",
        lag=7,
        pending=3,
        oldest_pending_age_ms=4_500,
        last_delivered_id="5-0",
        dead_letters=2,
        consumers=[ConsumerView("embed-a", 3, 1_200), ConsumerView("embed-b", 0, 90_000)],
        entries_read=40,
    )
    indexer = GroupView(
        name="indexer",
        lag=0,
        pending=0,
        oldest_pending_age_ms=None,
        last_delivered_id="9-0",
        dead_letters=0,
        consumers=[],
        entries_read=None,
    )
    return StatusReport(
        prefix="p",
        streams=[
            StreamView("p:ingest", 50, True, [embedder]),
            StreamView("p:embedded", 12, True, [indexer]),
            StreamView("p:results", 0, False),
        ],
        dead_letter_stream="p:dlq",
        dead_letters_total=5,
    )


def test_each_group_reports_what_status_reads() -> None:
    scrape = exposition(report())
    ingest = {"stream": "p:ingest", "group": "embedder"}
    assert scrape.value("embedstream_queue_up") == 1
    assert scrape.value("embedstream_stream_length", stream="p:ingest") == 50
    assert scrape.value("embedstream_group_lag", **ingest) == 7
    assert scrape.value("embedstream_group_pending", **ingest) == 3
    assert scrape.value("embedstream_group_oldest_pending_age_seconds", **ingest) == 4.5
    assert scrape.value("embedstream_group_entries_read_total", **ingest) == 40
    assert scrape.value("embedstream_group_consumers", **ingest) == 2
    # embed-b was last seen 90 s ago: over the 60 s bound, not active
    assert scrape.value("embedstream_group_consumers_active", **ingest) == 1
    assert scrape.value("embedstream_group_consumer_idle_min_seconds", **ingest) == 1.2
    assert scrape.value("embedstream_group_dead_letters_total", **ingest) == 2
    assert scrape.value("embedstream_dead_letters", stream="p:dlq") == 5


def test_a_group_without_consumers_or_pending_entries_reads_zero_not_missing() -> None:
    scrape = exposition(report())
    indexer = {"stream": "p:embedded", "group": "indexer"}
    assert (
        "embedstream_group_oldest_pending_age_seconds",
        frozenset(indexer.items()),
    ) in scrape.samples
    assert scrape.value("embedstream_group_consumers_active", **indexer) == 0
    assert scrape.value("embedstream_group_consumers", **indexer) == 0
    # a stream that does not exist yet reports nothing
    assert "p:results" not in scrape.label_values("embedstream_stream_length", "stream")


def test_labels_are_streams_and_groups_never_consumers() -> None:
    scrape = exposition(report())
    assert scrape.label_names() <= ALLOWED_LABELS
    assert not any("embed-a" in v for (_, ls) in scrape.samples for _, v in ls)


def test_redis_away_reports_only_that() -> None:
    scrape = exposition(None)
    assert scrape.value("embedstream_queue_up") == 0
    assert scrape.names() == {"embedstream_queue_up"}
