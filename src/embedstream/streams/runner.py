"""The run loop every worker and subscriber uses.

A ``StreamWorker`` reads batches for one stream/group and hands them to a handler that
answers one outcome per message. The loop owns everything else: group creation, own
pending entries first, reclaiming idle entries, lease renewal during long batches,
retries with backoff, the delivery cap, dead letters, bounded in-flight batches,
draining on stop, reconnecting after Redis outages, reaping dead consumers and trimming
what every group has acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Mapping
from typing import Generic, TypeVar

import redis.asyncio as redis
from redis.exceptions import ResponseError

from embedstream.adapters.redis_client import NO_REPLICA_ACK, ReplicaAck
from embedstream.config import ConsumerSettings
from embedstream.errors.redis import TRANSIENT, is_failover_reply, is_nogroup
from embedstream.metrics.runtime import ConsumerMetrics
from embedstream.streams.batch import (
    BatchProcessor,
    DeliveryLimitExceeded,
    RunStats,
    RuntimeHooks,
)
from embedstream.streams.consumer import RawEntry, StreamConsumer
from embedstream.streams.heartbeat import Heartbeat
from embedstream.streams.lease import CANCEL_GRACE_S, Backoff
from embedstream.streams.messages import (
    DeadLetterOps,
    Decoder,
    Handler,
    SettleOps,
    decode_envelope,
)
from embedstream.streams.names import StreamNames

T = TypeVar("T")

__all__ = ["DeliveryLimitExceeded", "RunStats", "StreamWorker", "install_stop_signals"]


class StreamWorker(Generic[T]):
    """Consume ``stream`` as ``settings.consumer_name`` in ``group`` with ``handler``."""

    def __init__(
        self,
        client: redis.Redis,
        names: StreamNames,
        stream: str,
        group: str,
        handler: Handler[T],
        settings: ConsumerSettings,
        *,
        decode: Decoder[T] = decode_envelope,  # type: ignore[assignment]
        stage: str | None = None,
        create_group: bool = True,
        start_id: str = "0",
        dead_letter_ops: DeadLetterOps | None = None,
        settle_ops: SettleOps | None = None,
        retain: Mapping[str, int] | None = None,
        heartbeat: Heartbeat | None = None,
        replica_ack: ReplicaAck = NO_REPLICA_ACK,
        metrics: bool = True,
    ) -> None:
        """``retain``: other streams this worker keeps bounded, each with its retention
        in ms: housekeeping trims their entries older than that which every group on the
        stream has acknowledged (``StreamConsumer.trim_acked``). ``settle_ops``: writes
        to run, by entry id, in the transaction that takes an entry off the pending list
        (its ack or its dead letter). ``heartbeat``: where the loop marks its progress
        (read by the liveness probe); one of its own by default. ``replica_ack``: the
        replicas to wait for after each ack (``EMBEDSTREAM_REDIS_MIN_REPLICAS_ACK``).
        ``metrics``: count messages, batches, reclaims and lease renewals for Prometheus
        (``embedstream.metrics.runtime``), labelled with the stage (else "subscriber")
        and the group."""
        self.settings = settings
        self.heartbeat = heartbeat or Heartbeat()
        self.create_group = create_group
        self.consumer = StreamConsumer(
            client,
            names,
            stream,
            group,
            settings.consumer_name,
            stage=stage,
            start_id=start_id,
            replica_ack=replica_ack,
        )
        self.hooks = RuntimeHooks(dead_letter_ops, settle_ops, dict(retain or {}))
        self.stats = RunStats()
        self.metrics = (
            ConsumerMetrics(stage or "subscriber", group) if metrics else ConsumerMetrics.off()
        )
        self.batches = BatchProcessor(
            self.consumer, settings, handler, decode, self.hooks, self.stats, metrics=self.metrics
        )
        self.log = self.batches.log
        self._own_done = False
        self._own_cursor: str | None = None
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._backoff = Backoff()

    @property
    def handler(self) -> Handler[T]:
        return self.batches.handler

    @property
    def retain(self) -> Mapping[str, int]:
        return self.hooks.retain or {}

    # -- the loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> RunStats:
        """Run until ``stop`` is set (or, in burst mode, until nothing is left to do)."""
        stop = stop or asyncio.Event()
        await self._setup(stop)
        in_flight: set[asyncio.Task[None]] = set()
        halt = asyncio.Event()  # ends housekeeping however the loop ends
        housekeeping = None if burst else asyncio.create_task(self._housekeeping(halt))
        if burst:
            await self._housekeep_once()
        self.log.info("consumer started", burst=burst)
        stopped = asyncio.ensure_future(stop.wait())
        heartbeat = self.heartbeat
        heartbeat.start(self.settings.max_in_flight)
        try:
            while not stop.is_set():
                heartbeat.loop()
                if len(in_flight) >= self.settings.max_in_flight:
                    # every slot busy: wait for a batch to end, or for stop (so the drain
                    # window starts now, not after the slowest batch)
                    await asyncio.wait({*in_flight, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    continue
                entries = await self._next_entries(stop, burst)
                if not entries:
                    if burst:
                        if await self._burst_finished(in_flight):
                            break
                        await asyncio.sleep(0.02)
                    continue
                task = asyncio.create_task(self._process_batch(entries))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            heartbeat.stop()
            stopped.cancel()
            await self._drain(in_flight)
            halt.set()
            if housekeeping is not None:
                housekeeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await housekeeping
        if burst:
            await self._housekeep_once()
        self.log.info("consumer stopped", **vars(self.stats))
        return self.stats

    async def _setup(self, stop: asyncio.Event) -> None:
        while True:
            try:
                if self.create_group:
                    await self.consumer.ensure_group()
                return
            except TRANSIENT as exc:
                if stop.is_set():
                    raise
                await self._wait_out(exc)

    async def _next_entries(self, stop: asyncio.Event, burst: bool) -> list[RawEntry]:
        """Own pending entries first, then reclaimable ones when due, then new ones."""
        count = self.settings.batch_size
        try:
            if not self._own_done:
                own = await self.consumer.claim_own(count, self._own_cursor)
                if own:
                    self._own_cursor = own[-1][0]
                    return own
                self._own_done = True
            if burst or time.monotonic() >= self._next_claim:
                cursor, claimed = await self.consumer.claim_idle(
                    self.settings.visibility_timeout_ms, count, self._claim_cursor
                )
                self._claim_cursor = cursor
                self.metrics.claimed(len(claimed))
                more = cursor != "0-0"
                self._next_claim = time.monotonic() + (
                    0 if more else self.settings.claim_interval_ms / 1000
                )
                if claimed:
                    return claimed
            entries = await self.consumer.read_new(count, None if burst else self.settings.block_ms)
            self._backoff.reset()
            return entries
        except ResponseError as exc:
            # redis-py's cluster errors (CLUSTERDOWN while a replica is promoted, ...) are
            # ResponseErrors too: a failover reply is waited out, never raised
            if is_failover_reply(exc):  # e.g. a blocked read on a primary just demoted
                if not stop.is_set():
                    await self._wait_out(exc)
                return []
            if not is_nogroup(exc):
                raise
            if not self.create_group:
                raise self.consumer.group_missing() from exc
            self.log.warning("consumer group vanished (Redis restarted?); recreating it")
            await self._setup(stop)
            return []
        except TRANSIENT as exc:
            if not stop.is_set():
                await self._wait_out(exc)
            return []

    async def _wait_out(self, exc: BaseException) -> None:
        delay = self._backoff.next_delay()
        self.log.warning(
            "redis unavailable, retrying",
            error=f"{type(exc).__name__}: {exc}",
            retry_in_s=round(delay, 3),
            failures=self._backoff.failures,
        )
        await asyncio.sleep(delay)

    async def _burst_finished(self, in_flight: set[asyncio.Task[None]]) -> bool:
        if in_flight:
            return False
        try:
            return await self.consumer.own_pending() == 0
        except TRANSIENT:
            return False

    # -- one batch -------------------------------------------------------------------

    async def _process_batch(self, entries: list[RawEntry]) -> None:
        """``_process``, logging what it could not handle: such entries stay pending and
        are redelivered after the visibility timeout. The batch's progress is tracked
        for the liveness probe while it runs."""
        progress = self.heartbeat.batch_started()
        started = self.metrics.batch_started(len(entries))
        try:
            await self._process(entries)
        except Exception:
            self.log.exception(
                "batch failed; its entries will be redelivered",
                messages=[entry_id for entry_id, _, _ in entries],
            )
        finally:
            self.metrics.batch_ended(started)
            self.heartbeat.batch_ended(progress)

    async def _process(self, entries: list[RawEntry]) -> None:
        """One batch: decode, handle, settle (``embedstream.streams.batch``)."""
        await self.batches.process(entries)

    async def _drain(self, in_flight: set[asyncio.Task[None]]) -> None:
        if not in_flight:
            return
        self.log.info("draining", batches=len(in_flight))
        _, pending = await asyncio.wait(set(in_flight), timeout=self.settings.drain_timeout_s)
        if not pending:
            return
        self.log.warning("drain timeout: handing back unfinished batches", batches=len(pending))
        self.batches.stopping = True  # a batch waiting for replicas gives up now
        # Cancel, and cancel again while a batch is still running: a cancellation that
        # lands inside a redis-py call can be lost (see lease.CANCEL_NOTE). Bounded: what is
        # still running after the grace period is left pending, to be reclaimed.
        grace_until = time.monotonic() + CANCEL_GRACE_S
        while pending and time.monotonic() < grace_until:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        if pending:
            self.log.error("batches ignored cancellation; their entries stay pending")

    # -- housekeeping ----------------------------------------------------------------

    async def _housekeeping(self, halt: asyncio.Event) -> None:
        interval = max(1.0, self.settings.claim_interval_ms / 1000)
        while not halt.is_set():
            await self._housekeep_once()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await halt.wait()

    async def _housekeep_once(self) -> None:
        try:
            reaped = await self.consumer.reap_idle_consumers(
                self.settings.consumer_idle_reap_ms, self.settings.visibility_timeout_ms
            )
            for name, moved in reaped:
                self.log.info("reaped idle consumer", reaped=name, entries_moved=moved)
            if self.settings.trim:
                await self.consumer.trim_acked()
            for stream, retain_ms in self.retain.items():
                await self.consumer.trim_acked(stream, retain_ms=retain_ms)
        except TRANSIENT as exc:
            self.log.warning("housekeeping skipped: redis unavailable", error=str(exc))
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: stop reading, drain, exit 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
