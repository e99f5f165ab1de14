"""What the stream runtime counts, per stage and consumer group (see the package doc).

The metric families live in prometheus-client's default registry, created once per
process on import; a consumer binds its label values once (``ConsumerMetrics``), so a
batch costs a handful of increments. ``ConsumerMetrics.off()`` counts nothing
(``EMBEDSTREAM_METRICS=false``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram

from embedstream import tracing

MESSAGES = Counter(
    "embedstream_messages",
    "Messages a stage's consumers settled, by outcome (acked, retried, dead_lettered).",
    ["stage", "group", "outcome"],
)
RECLAIMED = Counter(
    "embedstream_messages_reclaimed",
    "Entries taken over from other consumers after the visibility timeout (XAUTOCLAIM).",
    ["stage", "group"],
)
LEASE_RENEWALS = Counter(
    "embedstream_lease_renewals",
    "Renewals of a slow batch's lease (its entries' idle time reset while it runs).",
    ["stage", "group"],
)
BATCH_MESSAGES = Histogram(
    "embedstream_batch_messages",
    "Entries per batch read by a stage's consumer.",
    ["stage", "group"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
BATCH_DURATION = Histogram(
    "embedstream_batch_duration_seconds",
    "Time from a batch read to its entries settled (decode, handler, acks).",
    ["stage", "group"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
IN_FLIGHT = Gauge(
    "embedstream_batches_in_flight",
    "Batches being handled right now.",
    ["stage", "group"],
)
STORE_WRITE = Histogram(
    "embedstream_store_write_duration_seconds",
    "One write of a batch to a store (Chroma by the index stage, PostgreSQL by the "
    "persist stage), by outcome (ok, error).",
    ["store", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

Store = Literal["chroma", "postgres"]


class ConsumerMetrics:
    """The runtime's counters bound to one consumer's stage and group."""

    def __init__(self, stage: str, group: str) -> None:
        self.acked = MESSAGES.labels(stage, group, "acked")
        self.retried = MESSAGES.labels(stage, group, "retried")
        self.dead_lettered = MESSAGES.labels(stage, group, "dead_lettered")
        self.reclaimed = RECLAIMED.labels(stage, group)
        self.lease_renewals = LEASE_RENEWALS.labels(stage, group)
        self.batch_messages = BATCH_MESSAGES.labels(stage, group)
        self.batch_duration = BATCH_DURATION.labels(stage, group)
        self.in_flight = IN_FLIGHT.labels(stage, group)

    @staticmethod
    def off() -> ConsumerMetrics:
        return _NoMetrics()

    def settled(self, acked: int, retried: int, dead_lettered: int) -> None:
        if acked:
            self.acked.inc(acked)
        if retried:
            self.retried.inc(retried)
        if dead_lettered:
            self.dead_lettered.inc(dead_lettered)

    def batch_started(self, size: int) -> float:
        self.in_flight.inc()
        self.batch_messages.observe(size)
        return time.perf_counter()

    def batch_ended(self, started: float) -> None:
        self.in_flight.dec()
        self.batch_duration.observe(time.perf_counter() - started)

    def claimed(self, count: int) -> None:
        if count:
            self.reclaimed.inc(count)

    def lease_renewed(self) -> None:
        self.lease_renewals.inc()


class _NoMetrics(ConsumerMetrics):
    """Counts nothing (metrics turned off)."""

    def __init__(self) -> None:
        pass

    def settled(self, acked: int, retried: int, dead_lettered: int) -> None:
        pass

    def batch_started(self, size: int) -> float:
        return 0.0

    def batch_ended(self, started: float) -> None:
        pass

    def claimed(self, count: int) -> None:
        pass

    def lease_renewed(self) -> None:
        pass


_SPANS = {"chroma": "chroma write", "postgres": "postgresql write"}
_DB_SYSTEMS = {"chroma": "chroma", "postgres": "postgresql"}


@contextmanager
def store_write(store: Store) -> Iterator[None]:
    """Time one write to ``store`` (outcome ``error`` when it raises), in a span of its
    own when tracing is on."""
    started = time.perf_counter()
    outcome = "error"
    try:
        with tracing.span(_SPANS[store], {"db.system": _DB_SYSTEMS[store]}):
            yield
        outcome = "ok"
    finally:
        STORE_WRITE.labels(store, outcome).observe(time.perf_counter() - started)
