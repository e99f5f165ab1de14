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
import dataclasses
import random
import signal
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio as redis
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from embedstream.config import ConsumerSettings
from embedstream.errors import PermanentError, PoisonMessage
from embedstream.logging import get_logger
from embedstream.streams.consumer import Dead, Outcomes, RawEntry, StreamConsumer, split_outcomes
from embedstream.streams.heartbeat import Heartbeat
from embedstream.streams.messages import (
    Ack,
    DeadLetterOps,
    Decoder,
    Handler,
    Message,
    SettleOps,
    decode_envelope,
    outcome_for,
)
from embedstream.streams.names import StreamNames

T = TypeVar("T")

TRANSIENT = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError)


class DeliveryLimitExceeded(PermanentError):
    """An entry was delivered ``max_deliveries`` times without an outcome."""

    code = "retries_exhausted"
    public_message = "the stage did not finish the document within its delivery limit"


@dataclass
class RunStats:
    batches: int = 0
    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0


class _Backoff:
    """Exponential backoff with jitter for reconnecting; reset after a success."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next_delay(self) -> float:
        self.failures += 1
        delay: float = min(self.cap, self.base * 2.0 ** (self.failures - 1))
        jitter: float = random.uniform(0.5, 1.0)
        return delay * jitter

    def reset(self) -> None:
        self.failures = 0


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
    ) -> None:
        """``retain``: other streams this worker keeps bounded, each with its retention
        in ms: housekeeping trims their entries older than that which every group on the
        stream has acknowledged (``StreamConsumer.trim_acked``). ``settle_ops``: writes
        to run, by entry id, in the transaction that takes an entry off the pending list
        (its ack or its dead letter). ``heartbeat``: where the loop marks its progress
        (read by the liveness probe); one of its own by default."""
        self.settings = settings
        self.heartbeat = heartbeat or Heartbeat()
        self.retain = dict(retain or {})
        self.dead_letter_ops = dead_letter_ops
        self.settle_ops = settle_ops
        self.handler = handler
        self.decode = decode
        self.create_group = create_group
        self.consumer = StreamConsumer(
            client, names, stream, group, settings.consumer_name, stage=stage, start_id=start_id
        )
        self.stats = RunStats()
        self.log = get_logger("embedstream.worker").bind(
            stream=stream, group=group, consumer=settings.consumer_name
        )
        self._own_done = False
        self._own_cursor: str | None = None
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._backoff = _Backoff()

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
            if not self.consumer.is_nogroup(exc):
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
        try:
            await self._process(entries)
        except Exception:
            self.log.exception(
                "batch failed; its entries will be redelivered",
                messages=[entry_id for entry_id, _, _ in entries],
            )
        finally:
            self.heartbeat.batch_ended(progress)

    async def _process(self, entries: list[RawEntry]) -> None:
        self.stats.batches += 1
        ready: list[Message[T]] = []
        dead: list[Dead] = []
        max_deliveries = self.settings.max_deliveries
        decode, stream = self.decode, self.consumer.stream
        for entry_id, fields, attempt in entries:
            if attempt > max_deliveries:
                error: BaseException = DeliveryLimitExceeded(
                    f"delivered {attempt} times without an outcome (max_deliveries="
                    f"{max_deliveries}); the consumers that took it crashed or timed out"
                )
                dead.append(Dead(entry_id, fields, attempt - 1, error, {}))
                continue
            try:
                body = decode(fields)
            except Exception as exc:
                poison = exc if isinstance(exc, PoisonMessage) else PoisonMessage(str(exc))
                dead.append(Dead(entry_id, fields, attempt, poison, {}))
                continue
            ready.append(Message(entry_id, stream, fields, body, attempt))

        done: list[tuple[str, Ack]] = []
        retry_later: list[tuple[str, int, BaseException]] = []
        if ready:
            # the lease covers the whole batch: entries already known to be dead letters
            # are written with the others, after the handler, and must not be reclaimed
            # (and dead-lettered a second time) by another consumer meanwhile
            batch_ids = [entry_id for entry_id, _, _ in entries]
            done, failed, retries = await self._handle(ready, batch_ids)
            dead.extend(failed)
            for message, error in retries:
                if message.attempt >= max_deliveries:
                    dead.append(Dead(message.id, message.fields, message.attempt, error, {}))
                else:
                    retry_later.append((message.id, message.attempt, error))

        if self.dead_letter_ops is not None:
            dead = [self._with_dead_letter_ops(item) for item in dead]
        if self.settle_ops is not None:
            settle = self.settle_ops
            for entry_id, ack in done:
                ack.ops = (*ack.ops, *settle(entry_id))
            dead = [
                dataclasses.replace(item, ops=(*item.ops, *settle(item.entry_id))) for item in dead
            ]
        await _complete(self._finish(done, dead))
        if retry_later:
            await _complete(self._schedule_retries(retry_later))
        self.stats.acked += len(done)
        self.stats.dead_lettered += len(dead)
        self.stats.retried += len(retry_later)
        for item in dead:
            self.log.error(
                "message dead-lettered",
                message_id=item.entry_id,
                attempt=item.attempts,
                error_type=type(item.error).__name__,
                error=str(item.error),
            )

    def _with_dead_letter_ops(self, item: Dead) -> Dead:
        assert self.dead_letter_ops is not None
        try:
            ops = self.dead_letter_ops(item.fields, item.error)
        except Exception:
            self.log.exception("dead_letter_ops failed; dead-lettering without them")
            return item
        return dataclasses.replace(item, ops=ops)

    async def _handle(self, ready: list[Message[T]], ids: list[str]) -> Outcomes[T]:
        """The handler's outcomes, sorted; a handler that raises (or answers something
        else than one outcome per message) gets the exception's outcome for every message.
        ``ids``: every entry of the batch, kept leased while the handler runs."""
        lease = _Lease(self, ids)
        try:
            try:
                outcomes = await self.handler(ready)
            finally:
                await lease.release()
            if len(outcomes) != len(ready):
                raise RuntimeError(
                    f"handler returned {len(outcomes)} outcomes for {len(ready)} messages"
                )
            return split_outcomes(ready, outcomes)
        except asyncio.CancelledError:
            await _complete(self._hand_back(ids))
            raise
        except TRANSIENT as exc:
            # an outage of Redis (or of the network) under the handler: nothing to debug;
            # the batch is retried with backoff and _schedule_retries logs it in one line
            return split_outcomes(ready, [outcome_for(exc)] * len(ready))
        except Exception as exc:
            self.log.exception("handler failed for the whole batch", messages=len(ready))
            return split_outcomes(ready, [outcome_for(exc)] * len(ready))

    async def _finish(self, done: list[tuple[str, Ack]], dead: list[Dead]) -> None:
        """Write acks, follow-ups and dead letters, retrying through short outages. If
        Redis stays away, the entries stay pending and are redelivered later."""
        deadline = time.monotonic() + self.settings.visibility_timeout_ms / 1000
        backoff = _Backoff()
        while True:
            try:
                await self.consumer.finish(done, dead)
                return
            except TRANSIENT as exc:
                if time.monotonic() > deadline:
                    self.log.error(
                        "could not acknowledge; entries will be redelivered", error=str(exc)
                    )
                    return
                await asyncio.sleep(backoff.next_delay())

    async def _schedule_retries(self, retries: list[tuple[str, int, BaseException]]) -> None:
        """Postpone each entry by its backoff: its idle time is set so that it becomes
        reclaimable (by any replica) once the backoff has passed. Entries with the same
        backoff are postponed in one call, so they also come back together."""
        vis = self.settings.visibility_timeout_ms
        by_idle: dict[int, list[str]] = {}
        by_error: dict[int, list[tuple[str, int, int]]] = {}
        errors: dict[int, BaseException] = {}
        for entry_id, attempt, error in retries:
            backoff = min(
                self.settings.retry_backoff_max_ms,
                self.settings.retry_backoff_ms * 2 ** (attempt - 1),
            )
            by_idle.setdefault(vis - backoff, []).append(entry_id)
            errors[id(error)] = error
            by_error.setdefault(id(error), []).append((entry_id, attempt, backoff))
        for key, items in by_error.items():
            # one line per error: a batch that failed as a whole logs once, not per entry
            error = errors[key]
            self.log.warning(
                "message will be retried" if len(items) == 1 else "messages will be retried",
                message_id=items[0][0],
                messages=len(items),
                attempt=max(attempt for _, attempt, _ in items),
                retry_in_ms=min(backoff for _, _, backoff in items),
                error_type=type(error).__name__,
                error=str(error),
            )
        for idle_ms, ids in by_idle.items():
            with contextlib.suppress(*TRANSIENT):
                await self.consumer.set_idle(ids, idle_ms)

    async def _hand_back(self, ids: list[str]) -> None:
        """Make unfinished entries reclaimable by any replica at once."""
        with contextlib.suppress(*TRANSIENT):
            owned = await self.consumer.set_idle(ids, self.settings.visibility_timeout_ms)
            self.log.warning("handed back unfinished entries", entries=owned)

    async def _drain(self, in_flight: set[asyncio.Task[None]]) -> None:
        if not in_flight:
            return
        self.log.info("draining", batches=len(in_flight))
        _, pending = await asyncio.wait(set(in_flight), timeout=self.settings.drain_timeout_s)
        if not pending:
            return
        self.log.warning("drain timeout: handing back unfinished batches", batches=len(pending))
        # Cancel, and cancel again while a batch is still running: a cancellation that
        # lands inside a redis-py call can be lost (see _CANCEL_NOTE). Bounded: what is
        # still running after the grace period is left pending, to be reclaimed.
        grace_until = time.monotonic() + _CANCEL_GRACE_S
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
            if not self.consumer.is_nogroup(exc):
                raise


_CANCEL_GRACE_S = 5.0


class _Lease:
    """Keeps a batch's entries owned (idle reset to 0) while its handler runs, so that a
    slow but alive consumer is not robbed. Costs one timer per batch; a renewal task only
    exists for batches that outlive a renewal interval (a third of the visibility timeout)."""

    def __init__(self, worker: StreamWorker[Any], ids: list[str]) -> None:
        self._worker = worker
        self._ids = ids
        self._interval = worker.settings.visibility_timeout_ms / 3000
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(
            self._interval, self._renew_now
        )
        self._renewal: asyncio.Task[None] | None = None

    def _renew_now(self) -> None:
        self._renewal = self._loop.create_task(self._renew())

    async def _renew(self) -> None:
        try:
            await self._worker.consumer.set_idle(self._ids, 0)
        except Exception as exc:  # a missed renewal must not end the next ones
            self._worker.log.warning("lease renewal failed", error=f"{type(exc).__name__}: {exc}")
        if self._timer is not None:  # not released meanwhile
            self._timer = self._loop.call_later(self._interval, self._renew_now)

    async def release(self) -> None:
        """Stop renewing; returns once no renewal can land after this point (a hand-back
        or an ack that follows is not overtaken by a late renewal)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._renewal is not None and not self._renewal.done():
            # one command, bounded by the client's timeouts; waited for, not cancelled
            # (a cancel can be lost inside redis-py, see _CANCEL_NOTE)
            await asyncio.wait({self._renewal})


# _CANCEL_NOTE: with redis-py's default socket_timeout, every command is sent through
# asyncio.wait_for, which on Python 3.11 drops a cancellation that arrives as the send
# completes: the cancelled task just carries on. The runtime therefore never relies on a
# single cancel() to stop its own tasks.


async def _complete(write: Coroutine[Any, Any, None]) -> None:
    """Run a write (acks, dead letters, hand-backs, retry schedules) to its end even when
    the batch is cancelled (end of a drain), then re-raise the cancellation. Each write
    is bounded by its own deadline; finishing it keeps a handled batch from being handled
    again."""
    task = asyncio.ensure_future(write)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        break
    if cancelled:
        raise asyncio.CancelledError


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: stop reading, drain, exit 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
