"""One batch, from entries read to entries settled: where a message is decoded, handed
to the handler under a lease, and acked, dead-lettered or scheduled for a retry.

- **decoded**: ``decode`` turns each entry into the handler's message; what it refuses is
  poison and is dead-lettered at once (``embedstream.streams.decoding``). An entry
  delivered more than ``max_deliveries`` times is dead-lettered without being handled.
- **handled**: the handler answers one outcome per message (``Ack``, ``Retry``,
  ``DeadLetter``); a handler that raises gets its exception's outcome for every message,
  one that answers too few gets the missing-outcome policy
  (``embedstream.streams.outcomes``).
- **acked and dead-lettered**: in one MULTI/EXEC (``StreamConsumer.finish``), with each
  ack's follow-up events and ops, each dead letter's ``dead_letter_ops`` and every
  entry's ``settle_ops``.
- **retried**: a ``Retry`` postpones the entry by its backoff (its idle time is set so
  that any replica reclaims it once the backoff has passed); the retry on the last
  allowed delivery dead-letters it instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from structlog.typing import FilteringBoundLogger

from embedstream import tracing
from embedstream.adapters.redis_client import ReplicationTimeout
from embedstream.config import ConsumerSettings
from embedstream.errors import PermanentError, PoisonMessage
from embedstream.errors.redis import TRANSIENT
from embedstream.logging import get_logger
from embedstream.metrics.runtime import ConsumerMetrics
from embedstream.streams.consumer import Dead, Outcomes, RawEntry, StreamConsumer, split_outcomes
from embedstream.streams.heartbeat import report_progress
from embedstream.streams.lease import Backoff, BatchLease, complete
from embedstream.streams.log_context import message_context, traceparent_of
from embedstream.streams.messages import (
    Ack,
    DeadLetterOps,
    Decoder,
    Handler,
    Message,
    SettleOps,
    outcome_for,
)
from embedstream.streams.outcomes import missing_outcome

NOT_CONFIRMED: tuple[type[Exception], ...] = (ReplicationTimeout, *TRANSIENT)

T = TypeVar("T")


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


@dataclass(frozen=True)
class RuntimeHooks:
    """A consumer's extra writes (see ``StreamWorker``)."""

    dead_letter_ops: DeadLetterOps | None = None
    settle_ops: SettleOps | None = None
    retain: Mapping[str, int] | None = None


@dataclass
class BatchProcessor(Generic[T]):
    """Decodes, handles and settles the batches of one consumer (see the module doc)."""

    consumer: StreamConsumer
    settings: ConsumerSettings
    handler: Handler[T]
    decode: Decoder[T]
    hooks: RuntimeHooks
    stats: RunStats
    log: FilteringBoundLogger = field(init=False)
    metrics: ConsumerMetrics = field(default_factory=ConsumerMetrics.off)
    stopping: bool = field(default=False, init=False)
    """Set by the runner when a drain gives up on its batches: a wait for the replicas
    (``_replicated``) ends then, leaving the entries pending."""

    def __post_init__(self) -> None:
        consumer = self.consumer
        self.log = get_logger("embedstream.worker").bind(
            stream=consumer.stream, group=consumer.group, consumer=consumer.consumer
        )

    async def process(self, entries: list[RawEntry]) -> None:
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

        if tracing.active():
            traceparents = [traceparent_of(message.body) for message in ready]
            consumer = self.consumer
            with tracing.batch_span(stream, consumer.group, consumer.stage, traceparents):
                await self._settle(entries, ready, dead)
        else:
            await self._settle(entries, ready, dead)

    async def _settle(
        self, entries: list[RawEntry], ready: list[Message[T]], dead: list[Dead]
    ) -> None:
        """Handle what decoded, then ack, dead-letter and schedule retries."""
        max_deliveries = self.settings.max_deliveries
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

        if self.hooks.dead_letter_ops is not None:
            dead = [self._with_dead_letter_ops(item) for item in dead]
        if self.hooks.settle_ops is not None:
            settle = self.hooks.settle_ops
            for entry_id, ack in done:
                ack.ops = (*ack.ops, *settle(entry_id))
            dead = [
                dataclasses.replace(item, ops=(*item.ops, *settle(item.entry_id))) for item in dead
            ]
        await complete(self._finish(done, dead))
        if retry_later:
            await complete(self._schedule_retries(retry_later))
        self.stats.acked += len(done)
        self.stats.dead_lettered += len(dead)
        self.stats.retried += len(retry_later)
        self.metrics.settled(len(done), len(retry_later), len(dead))
        for item in dead:
            with message_context(item.entry_id, fields=item.fields):
                self.log.error(
                    "message dead-lettered",
                    attempt=item.attempts,
                    error_type=type(item.error).__name__,
                    error=str(item.error),
                )

    def _with_dead_letter_ops(self, item: Dead) -> Dead:
        assert self.hooks.dead_letter_ops is not None
        try:
            ops = self.hooks.dead_letter_ops(item.fields, item.error)
        except Exception:
            self.log.exception("dead_letter_ops failed; dead-lettering without them")
            return item
        return dataclasses.replace(item, ops=ops)

    async def _handle(self, ready: list[Message[T]], ids: list[str]) -> Outcomes[T]:
        """The handler's outcomes, sorted; a handler that raises gets the exception's
        outcome for every message, one that answers another number of outcomes than
        messages the missing-outcome policy for every message (it cannot tell which are
        missing). ``ids``: every entry of the batch, kept leased while the handler runs."""
        lease = BatchLease(
            self.consumer,
            ids,
            self.settings.visibility_timeout_ms,
            renewed=self.metrics.lease_renewed,
        )
        try:
            try:
                if len(ready) == 1:  # the handler's lines are about this message
                    with message_context(ready[0].id, ready[0].body):
                        outcomes = await self.handler(ready)
                else:
                    outcomes = await self.handler(ready)
            finally:
                await lease.release()
            if len(outcomes) != len(ready):
                why = f"the handler answered {len(outcomes)} outcomes for {len(ready)} messages"
                retry = missing_outcome(self.consumer.stage, [m.id for m in ready], why)
                outcomes = [retry] * len(ready)
            return split_outcomes(ready, outcomes)
        except asyncio.CancelledError:
            await complete(self.hand_back(ids))
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
        Redis stays away, the entries stay pending and are redelivered later.

        On a cluster with partitions and ``EMBEDSTREAM_REDIS_MIN_REPLICAS_ACK``, the
        writes in other slots are waited for on the replicas before the XACK, as long as
        that takes (``_replicated``), with the entries leased meanwhile: a slot short of
        replicas (a failover under way) is the state of the servers, not the message's
        fault, and must not spend its deliveries (nor dead-letter it at the cap)."""
        lease: BatchLease | None = None
        consumer = self.consumer
        if consumer.split_by_slot and consumer.replica_ack.replicas > 0:
            ids = [entry_id for entry_id, _ in done] + [item.entry_id for item in dead]
            visibility_ms = self.settings.visibility_timeout_ms
            lease = BatchLease(consumer, ids, visibility_ms, renewed=self.metrics.lease_renewed)
        try:
            await self._finish_writes(done, dead)
        finally:
            if lease is not None:
                await lease.release()

    async def _finish_writes(self, done: list[tuple[str, Ack]], dead: list[Dead]) -> None:
        deadline = time.monotonic() + self.settings.visibility_timeout_ms / 1000
        backoff = Backoff()
        while True:
            try:
                await self.consumer.finish(done, dead, replicated=self._replicated)
            except TRANSIENT as exc:
                if time.monotonic() > deadline:
                    self.log.error(
                        "could not acknowledge; entries will be redelivered", error=str(exc)
                    )
                    return
                await asyncio.sleep(backoff.next_delay())
                continue
            await self._confirm_replicated()
            return

    async def _replicated(self, key: str) -> None:
        """WAIT until this process's writes to ``key``'s node are on enough replicas,
        retrying with backoff while they are not; ``ReplicationTimeout`` only once the
        worker is stopping (the entries then stay pending, to be handled again). Each
        answered WAIT is progress for the liveness probe: a restart would not bring the
        replicas back, and would spend the entries' deliveries on a reclaim."""
        backoff = Backoff(base=0.1, cap=2.0)
        while True:
            try:
                await self.consumer.replica_ack.wait(self.consumer.client, key)
                return
            except ReplicationTimeout as exc:
                if self.stopping:
                    raise
                self.log.warning(
                    "waiting for replicas before acknowledging",
                    key=key,
                    waits=backoff.failures + 1,
                    error=str(exc),
                )
                report_progress()
                await asyncio.sleep(backoff.next_delay())

    async def _confirm_replicated(self) -> None:
        """With ``EMBEDSTREAM_REDIS_MIN_REPLICAS_ACK``: wait for the replicas after the
        ack; never repeats the ack (what could go wrong is logged: the entries are
        already acknowledged, see ``StreamConsumer.confirm_replicated``)."""
        try:
            await self.consumer.confirm_replicated()
        except NOT_CONFIRMED as exc:
            self.log.warning(
                "acknowledged writes not confirmed on the replicas; a failover now would "
                "have them handled again",
                error=str(exc),
            )

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

    async def hand_back(self, ids: list[str]) -> None:
        """Make unfinished entries reclaimable by any replica at once."""
        with contextlib.suppress(*TRANSIENT):
            owned = await self.consumer.set_idle(ids, self.settings.visibility_timeout_ms)
            self.log.warning("handed back unfinished entries", entries=owned)
