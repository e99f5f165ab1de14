"""The queue gauges, read from Redis at scrape time in one place (the API's ``/metrics``
or ``embedstream exporter``), never by every worker replica.

A scrape reads the streams' status through a ``StatusCache`` (``embedstream status``'s
own reading, ``embedstream.streams.status``): one reading serves every scrape for about
a second, and finding the streams (a SCAN) is done far less often. Per stream and group:

- ``embedstream_stream_length`` (entries in the stream),
- ``embedstream_group_lag`` (entries not yet delivered to the group),
- ``embedstream_group_pending`` (delivered, not yet acknowledged),
- ``embedstream_group_oldest_pending_age_seconds`` (0 with nothing pending),
- ``embedstream_group_entries_read_total`` (entries delivered so far: its rate is the
  group's read rate),
- ``embedstream_group_consumers``, ``embedstream_group_consumers_active`` (idle less than
  the visibility timeout) and ``embedstream_group_consumer_idle_min_seconds`` (the most
  recently seen consumer),
- ``embedstream_group_dead_letters_total`` (entries the group dead-lettered),

and ``embedstream_dead_letters`` (entries in the dead-letter stream),
``embedstream_jobs_total{status="completed"|"failed"}`` (jobs finished, each counted once
by the job bookkeeping's script, whichever replica finished it) and
``embedstream_queue_up`` (1 when the last reading succeeded).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from redis.exceptions import RedisError

from embedstream import tracing
from embedstream.logging import get_logger
from embedstream.streams.status import StatusReport
from embedstream.streams.status_cache import StatusCache
from embedstream.streams.status_checks import live_consumers

log = get_logger("embedstream.metrics")

GROUP_LABELS = ["stream", "group"]


class QueueCollector(Collector):
    """The gauges of one ``StatusReport`` (``None``: Redis did not answer)."""

    def __init__(self, report: StatusReport | None, active_idle_ms: int) -> None:
        self.report = report
        self.active_idle_ms = active_idle_ms

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "embedstream_queue_up", "1 when the queues could be read from Redis, else 0."
        )
        up.add_metric([], 0 if self.report is None else 1)
        yield up
        if self.report is None:
            return
        report = self.report
        length = GaugeMetricFamily(
            "embedstream_stream_length", "Entries in the stream.", labels=["stream"]
        )
        lag = GaugeMetricFamily(
            "embedstream_group_lag", "Entries not yet delivered to the group.", labels=GROUP_LABELS
        )
        pending = GaugeMetricFamily(
            "embedstream_group_pending",
            "Entries delivered to the group and not yet acknowledged.",
            labels=GROUP_LABELS,
        )
        oldest = GaugeMetricFamily(
            "embedstream_group_oldest_pending_age_seconds",
            "Age of the group's oldest unacknowledged entry (0 with nothing pending).",
            labels=GROUP_LABELS,
        )
        read = CounterMetricFamily(
            "embedstream_group_entries_read",
            "Entries delivered to the group so far (its rate is the group's read rate).",
            labels=GROUP_LABELS,
        )
        consumers = GaugeMetricFamily(
            "embedstream_group_consumers", "Consumers known to the group.", labels=GROUP_LABELS
        )
        active = GaugeMetricFamily(
            "embedstream_group_consumers_active",
            "Consumers seen within the visibility timeout.",
            labels=GROUP_LABELS,
        )
        idle = GaugeMetricFamily(
            "embedstream_group_consumer_idle_min_seconds",
            "Idle time of the group's most recently seen consumer.",
            labels=GROUP_LABELS,
        )
        dead = CounterMetricFamily(
            "embedstream_group_dead_letters",
            "Entries the group sent to the dead-letter stream.",
            labels=GROUP_LABELS,
        )
        for stream in report.streams:
            if not stream.exists:
                continue
            length.add_metric([stream.stream], stream.length)
            for group in stream.groups:
                where = [stream.stream, group.name]
                if group.lag is not None:
                    lag.add_metric(where, group.lag)
                pending.add_metric(where, group.pending)
                oldest.add_metric(where, (group.oldest_pending_age_ms or 0) / 1000)
                if group.entries_read is not None:
                    read.add_metric(where, group.entries_read)
                consumers.add_metric(where, len(group.consumers))
                active.add_metric(where, live_consumers(group, self.active_idle_ms))
                if group.consumers:
                    least = min(c.idle_ms for c in group.consumers)
                    idle.add_metric(where, least / 1000)
                dead.add_metric(where, group.dead_letters)
        yield from (length, lag, pending, oldest, read, consumers, active, idle, dead)
        dlq = GaugeMetricFamily(
            "embedstream_dead_letters", "Entries in the dead-letter stream.", labels=["stream"]
        )
        dlq.add_metric([report.dead_letter_stream], report.dead_letters_total)
        yield dlq
        jobs = CounterMetricFamily(
            "embedstream_jobs",
            "Jobs finished, by final status (each job counted once).",
            labels=["status"],
        )
        jobs.add_metric(["completed"], report.jobs_completed)
        jobs.add_metric(["failed"], report.jobs_failed)
        yield jobs


class QueueMetrics:
    """The exposition of the queue gauges, from a shared ``StatusCache``."""

    def __init__(self, cache: StatusCache, active_idle_ms: int) -> None:
        self.cache = cache
        self.active_idle_ms = active_idle_ms

    async def collector(self) -> QueueCollector:
        try:
            with tracing.untraced():
                report: StatusReport | None = await self.cache.read()
        except (RedisError, OSError) as exc:
            log.warning("queue metrics: redis unavailable", error=f"{type(exc).__name__}: {exc}")
            report = None
        return QueueCollector(report, self.active_idle_ms)

    async def exposition(self) -> bytes:
        """The gauges in Prometheus' text format."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(await self.collector())
        return generate_latest(registry)
