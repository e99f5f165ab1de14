"""A pipeline stage, declared once, and the one way every stage runs.

A ``Stage`` says everything that differs between the embed, index and persist stages:
its names (``embedstream.streams.names``: its own, its stream's, its group's), the
payload types it reads, the clients it opens (its model or its store, waiting for the
store where it is away), the readiness checks of those clients, how its handler is made
and the runtime hooks it adds. ``run_stage`` does the rest the same way for all:
Redis, the health endpoint (with the process' ``/metrics``), tracing when the ``OTEL_*``
variables ask for it, the job bookkeeping, the stream runtime with the stage's decoder,
and closing everything on the way out. ``embedstream worker KIND`` and
``embedstream dev`` run stages through it; ``embedstream init`` creates their groups.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis.asyncio as redis
from pydantic import BaseModel

from embedstream import tracing
from embedstream.adapters.redis_client import NO_REPLICA_ACK, ReplicaAck, create_redis
from embedstream.config import ConsumerSettings, EventSettings, Settings
from embedstream.errors.redis import TRANSIENT
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.envelope import Fields
from embedstream.streams.batch import RunStats, RuntimeHooks
from embedstream.streams.decoding import Decoded, payload_decoder
from embedstream.streams.heartbeat import Heartbeat
from embedstream.streams.messages import Handler
from embedstream.streams.names import StageNames, StreamNames
from embedstream.streams.partitions import check_partitions
from embedstream.streams.runner import StreamWorker
from embedstream.workers.health import ReadyCheck, worker_health

C = TypeVar("C")
"""What a stage opens for its handler: its model, or its store's client."""
P = TypeVar("P", bound=BaseModel)
"""The payloads a stage reads."""

StageHandler = Handler[Decoded[P]]


@dataclass
class StageContext:
    """What every stage's handler is made with, besides its own clients."""

    client: redis.Redis
    names: StreamNames
    consumer: ConsumerSettings
    events: EventSettings = field(default_factory=EventSettings)
    tracker: JobTracker | None = None
    """the job bookkeeping; one of its own (with ``events``' result versions) by default"""
    results_retention_s: int = 0
    """``RESULTS_RETENTION_S``: the persist stage keeps the results stream this long."""
    replica_ack: ReplicaAck = NO_REPLICA_ACK
    """``REDIS_MIN_REPLICAS_ACK``: the replicas the worker waits for after an ack."""
    metrics: bool = True
    """count for Prometheus (``EMBEDSTREAM_METRICS``)"""
    jobs: JobTracker = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = self.tracker or JobTracker(
            self.client, self.names, results_versions=self.events.results_event_versions
        )


def no_hooks(context: StageContext) -> RuntimeHooks:
    return RuntimeHooks()


@dataclass(frozen=True)
class Stage(Generic[C, P]):
    """One stage of the pipeline (see the module doc)."""

    names: StageNames
    payloads: Mapping[str, type[P]]
    """envelope type -> payload model: what the stage reads; anything else is poison"""
    clients: Callable[[Settings, asyncio.Event], AbstractAsyncContextManager[C | None]]
    """opens what the handler needs (None: ``stop`` was set while it waited)"""
    handler: Callable[[C, StageContext], StageHandler[P]]
    checks: Callable[[C], Mapping[str, ReadyCheck]]
    """readiness checks of the clients, besides Redis"""
    hooks: Callable[[StageContext], RuntimeHooks] = no_hooks
    """dead-letter ops, settle ops and streams to keep bounded"""

    @property
    def name(self) -> str:
        return self.names.name

    @property
    def group(self) -> str:
        return self.names.group

    @property
    def source(self) -> str:
        """The ``source`` of the events the stage writes."""
        return f"embedstream.{self.name}"

    def decoder(self) -> Callable[[Fields], Decoded[P]]:
        """The runtime's decoder for the stage: its payload types, anything else poison."""
        return payload_decoder(self.payloads, reader=f"the {self.name} stage")

    def worker(
        self,
        context: StageContext,
        handler: StageHandler[P],
        heartbeat: Heartbeat | None = None,
    ) -> StreamWorker[Any]:
        """The stream runtime running ``handler`` on the stage's stream (of the
        partition ``context.names`` is a view of) and group."""
        hooks = self.hooks(context)
        return StreamWorker(
            context.client,
            context.names,
            self.names.stream_of(context.names),
            self.group,
            handler,
            context.consumer,
            decode=self.decoder(),
            stage=self.name,
            dead_letter_ops=hooks.dead_letter_ops,
            settle_ops=hooks.settle_ops,
            # one partition's worker keeps the shared streams bounded
            retain=hooks.retain if context.names.partition == 0 else None,
            replica_ack=context.replica_ack,
            heartbeat=heartbeat,
            metrics=context.metrics,
        )

    def build(
        self, clients: C, context: StageContext, heartbeat: Heartbeat | None = None
    ) -> StreamWorker[Any]:
        """The stage's worker over open clients."""
        return self.worker(context, self.handler(clients, context), heartbeat)

    def build_all(self, clients: C, context: StageContext) -> list[StreamWorker[Any]]:
        """A worker per partition (one without partitions), sharing one heartbeat: a
        replica consumes every partition. Each has its own loop, reads and leases, so a
        busy partition does not hold back the others."""
        heartbeat = Heartbeat()
        return [
            self.build(clients, dataclasses.replace(context, names=view), heartbeat)
            for view in context.names.views()
        ]


async def run_stage(
    stage: Stage[Any, Any], settings: Settings, stop: asyncio.Event, *, burst: bool = False
) -> RunStats:
    """Run one replica of ``stage`` until ``stop`` is set (or, with ``burst``, until its
    stream has nothing left for it): open Redis and the stage's clients (live, not
    ready, while they are waited for), consume, close."""
    tracing.setup_tracing(f"embedstream-{stage.name}")
    client = create_redis(settings.redis)
    try:
        async with (
            worker_health(
                settings.health, stage.name, stop, metrics=settings.metrics.metrics
            ) as health,
            stage.clients(settings, stop) as clients,
        ):
            if clients is None:  # stopped while waiting for a store or a writer lock
                return RunStats()
            context = StageContext(
                client,
                settings.redis.names(),
                settings.consumer,
                settings.events,
                results_retention_s=settings.redis.results_retention_s,
                replica_ack=ReplicaAck.of(settings.redis),
                metrics=settings.metrics.metrics,
            )
            while True:
                try:
                    await check_partitions(client, context.names)
                    break
                except TRANSIENT:
                    if stop.is_set():
                        return RunStats()
                    await asyncio.sleep(1.0)
            workers = stage.build_all(clients, context)
            health.watch(workers[0].heartbeat, {"redis": client.ping, **stage.checks(clients)})
            runs = await asyncio.gather(*(worker.run(stop, burst=burst) for worker in workers))
            return RunStats(
                **{name: sum(getattr(r, name) for r in runs) for name in vars(RunStats())}
            )
    finally:
        await client.aclose()
        await asyncio.to_thread(tracing.flush)
