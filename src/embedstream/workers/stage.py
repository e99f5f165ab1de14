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
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis.asyncio as redis
from pydantic import BaseModel

from embedstream import tracing
from embedstream.adapters.redis_client import create_redis
from embedstream.config import ConsumerSettings, EventSettings, Settings
from embedstream.jobs.tracker import JobTracker
from embedstream.schemas.envelope import Fields
from embedstream.streams.batch import RunStats, RuntimeHooks
from embedstream.streams.decoding import Decoded, payload_decoder
from embedstream.streams.messages import Handler
from embedstream.streams.names import StageNames, StreamNames
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

    def worker(self, context: StageContext, handler: StageHandler[P]) -> StreamWorker[Any]:
        """The stream runtime running ``handler`` on the stage's stream and group."""
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
            retain=hooks.retain,
            metrics=context.metrics,
        )

    def build(self, clients: C, context: StageContext) -> StreamWorker[Any]:
        """The stage's worker over open clients."""
        return self.worker(context, self.handler(clients, context))


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
                StreamNames(settings.redis.stream_prefix),
                settings.consumer,
                settings.events,
                results_retention_s=settings.redis.results_retention_s,
                metrics=settings.metrics.metrics,
            )
            worker = stage.build(clients, context)
            health.watch(worker.heartbeat, {"redis": client.ping, **stage.checks(clients)})
            return await worker.run(stop, burst=burst)
    finally:
        await client.aclose()
        await asyncio.to_thread(tracing.flush)
