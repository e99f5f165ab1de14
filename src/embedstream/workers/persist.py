"""The persist stage: ``document.embedded`` / ``document.removed`` (``v1`` and ``v2``) from
``{prefix}:embedded`` (group ``persister``) into PostgreSQL, the system of record.

Each batch is one transaction (see ``adapters.postgres.repository``); every message then
gets its own outcome: acked with its job bookkeeping when its effect is durable or it was
refused as older than what is stored, dead-lettered when PostgreSQL refuses its data,
retried when the database is unavailable. An equal version is refused as stale (both
type versions of one event, or a re-embedded event after its reuse, are applied once); a
reused embedding whose content is not stored here waits for it or asks for a re-embed
(``embedstream.workers.reembed``). The events checked themselves when they were decoded
(``embedstream.schemas.events``): what reaches the handler fits the tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import asyncpg
import redis.asyncio as redis

from embedstream.adapters.postgres import (
    ChunkRow,
    DocumentStore,
    DocumentWrite,
    WriteResult,
    connect_pool,
    migrate,
)
from embedstream.config import ConsumerSettings, EventSettings, Settings
from embedstream.errors import RetryableError
from embedstream.errors import postgres as postgres_errors
from embedstream.jobs.results import JobContext
from embedstream.jobs.tracker import JobTracker
from embedstream.logging import get_logger
from embedstream.metrics.runtime import store_write
from embedstream.schemas.events import (
    EMBEDDED_STREAM_EVENTS,
    DocumentEmbeddedV2,
    DocumentEvent,
    EmbeddedStreamEvent,
    as_v2,
)
from embedstream.schemas.tenancy import chunk_id
from embedstream.streams.batch import RuntimeHooks
from embedstream.streams.decoding import Decoded
from embedstream.streams.messages import Ack, DeadLetter, Message, Outcome, Retry
from embedstream.streams.names import PERSIST, StreamNames
from embedstream.streams.outcomes import Outcomes
from embedstream.streams.runner import StreamWorker
from embedstream.workers.reembed import ReembedRequests, Unapplied, decide
from embedstream.workers.stage import Stage, StageContext

STAGE: Final = PERSIST.name

log = get_logger("embedstream.persist")

PersistMessage = Message[Decoded[EmbeddedStreamEvent]]


@dataclass(frozen=True)
class _Item:
    """A message of the batch: its event (in its v2 form) and the write it stands for."""

    message: PersistMessage
    event: DocumentEvent
    write: DocumentWrite

    @classmethod
    def of(cls, message: PersistMessage) -> _Item:
        event = as_v2(message.body.payload)
        return cls(message, event, to_write(message.body.envelope.tenant, event))


@dataclass
class PersistHandler:
    """The batch handler: one ``Outcome`` per message, in order."""

    store: DocumentStore
    tracker: JobTracker
    reembed: ReembedRequests | None = None
    max_deliveries: int = 5

    async def __call__(self, messages: Sequence[PersistMessage]) -> list[Outcome]:
        started = time.perf_counter()
        outcomes = Outcomes(messages, stage=STAGE)
        for position, outcome in enumerate(await self._write([_Item.of(m) for m in messages])):
            outcomes[position] = outcome
        done = outcomes.decided()
        log.debug(
            "batch persisted",
            messages=len(messages),
            acked=sum(isinstance(o, Ack) for o in done),
            retried=sum(isinstance(o, Retry) for o in done),
            dead_lettered=sum(isinstance(o, DeadLetter) for o in done),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return outcomes.result()

    async def _write(self, items: list[_Item]) -> list[Outcome]:
        """One outcome per item, in order."""
        if not items:
            return []
        try:
            with store_write("postgres"):
                results = await self.store.write([item.write for item in items])
        except postgres_errors.REFUSED as exc:
            log.warning(
                "postgres refused the batch; writing its documents one by one",
                error=f"{type(exc).__name__}: {exc}",
            )
            return await self._write_each(items)
        except Exception as exc:
            return [self._retry(exc)] * len(items)
        return [self._outcome(item, result) for item, result in zip(items, results, strict=True)]

    async def _write_each(self, items: list[_Item]) -> list[Outcome]:
        """Isolate the messages PostgreSQL refuses: one transaction per document."""
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for position, item in enumerate(items):
            groups[item.write.document].append(position)
        outcomes: dict[int, Outcome] = {}
        for positions in groups.values():
            try:
                with store_write("postgres"):
                    results = await self.store.write([items[p].write for p in positions])
                for p, result in zip(positions, results, strict=True):
                    outcomes[p] = self._outcome(items[p], result)
            except postgres_errors.REFUSED as exc:
                refused = DeadLetter(postgres_errors.refusal(exc))
                outcomes.update({p: refused for p in positions})
            except Exception as exc:
                retry = self._retry(exc)
                outcomes.update({p: retry for p in positions})
        return [outcomes[p] for p in range(len(items))]

    def _outcome(self, item: _Item, result: WriteResult) -> Outcome:
        if result in (WriteResult.CONFLICT, WriteResult.WAITING):
            return self._unapplied_reuse(item, result)
        write, envelope = item.write, item.message.body.envelope
        deleted_version = write.version if write.deleted else None
        return Ack(
            ops=(
                self.tracker.stage_done(
                    write.job_id,
                    write.document_id,
                    STAGE,
                    job=JobContext(envelope.tenant, envelope.traceparent),
                    deleted_version=deleted_version,
                ),
            )
        )

    def _unapplied_reuse(self, item: _Item, result: WriteResult) -> Outcome:
        """A reused embedding whose content is not stored here: wait for its base, or ask
        for a re-embed (``embedstream.workers.reembed``)."""
        write, event, attempt = item.write, item.event, item.message.attempt
        decision = (
            Unapplied.REEMBED
            if result is WriteResult.CONFLICT
            else decide(None, None, attempt=attempt, max_deliveries=self.max_deliveries)
        )
        if (
            decision is Unapplied.WAIT
            or self.reembed is None
            or not isinstance(event, DocumentEmbeddedV2)
        ):
            return Retry(
                RetryableError(
                    f"document {write.document_id!r} version {write.version} reuses the "
                    f"embedding of version {write.base_version} (content "
                    f"{write.content_hash!r}), which is not stored yet; waiting for it"
                )
            )
        log.info(
            "reused embedding not applicable here; re-embed requested",
            document=f"{write.tenant}/{write.document_id}",
            version=event.version,
            base_version=event.base_version,
            result=result.value,
            attempt=attempt,
        )
        # no stage mark: the re-embedded event (same version) records it
        traceparent = item.message.body.envelope.traceparent
        return Ack(ops=(self.reembed.op(write.tenant, event, traceparent),))

    def _retry(self, exc: Exception) -> Retry:
        if postgres_errors.is_transient(exc):
            # the runtime logs the retry in one warning line, with this error
            return Retry(postgres_errors.unavailable(exc))
        log.exception("persisting the batch failed; it will be retried")
        return Retry(exc)


# -- events to writes ----------------------------------------------------------------


def to_write(tenant: str, event: DocumentEvent) -> DocumentWrite:
    """The write an event (in its v2 form) of ``tenant`` stands for."""
    if isinstance(event, DocumentEmbeddedV2):
        return DocumentWrite(
            job_id=event.job_id,
            document_id=event.document_id,
            version=event.version_number,
            tenant=tenant,
            reused=event.reused,
            base_version=event.base_version_number,
            content_hash=event.content_hash,
            text=event.text,
            metadata_json=json.dumps(event.metadata, allow_nan=False, separators=(",", ":")),
            model=event.model,
            dim=event.dim,
            chunk_count=event.chunk_count,
            chunks=() if event.reused else chunk_rows(tenant, event),
        )
    return DocumentWrite(
        job_id=event.job_id,
        document_id=event.document_id,
        version=event.version_number,
        tenant=tenant,
        deleted=True,
    )


def chunk_rows(tenant: str, event: DocumentEmbeddedV2) -> tuple[ChunkRow, ...]:
    """The chunks as rows; their ids are derived from (tenant, document id, index), as
    the index stage derives Chroma's, whatever id the event names."""
    return tuple(
        ChunkRow(
            chunk.index,
            chunk_id(tenant, event.document_id, chunk.index),
            chunk.text,
            chunk.vector_bytes,
        )
        for chunk in event.chunks
    )


# -- the stage ------------------------------------------------------------------------


@asynccontextmanager
async def open_store(settings: Settings, stop: asyncio.Event) -> AsyncIterator[asyncpg.Pool | None]:
    """A pool on a migrated schema; None when ``stop`` is set while PostgreSQL is away (a
    worker does not die at the start of an outage)."""
    pool = await connect_pool(settings.postgres, stop)
    if pool is None:
        yield None
        return
    try:
        migrated = await _migrate(pool, settings.postgres.database_schema, stop)
        yield pool if migrated else None
    finally:
        await _close_pool(pool)


async def _migrate(pool: asyncpg.Pool, schema: str, stop: asyncio.Event) -> bool:
    """Apply migrations, waiting out a PostgreSQL that went away after the pool was made.
    False when stopped while waiting."""
    failures = 0
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                await migrate(conn, schema)
            return True
        except Exception as exc:
            if not postgres_errors.is_transient(exc):
                raise
            failures += 1
            delay = min(10.0, 0.1 * 2 ** (failures - 1))
            log.warning(
                "postgres unavailable while migrating, retrying",
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return False


async def _close_pool(pool: asyncpg.Pool, timeout_s: float = 10.0) -> None:
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        log.warning("postgres pool did not close in time; terminating its connections")
        pool.terminate()


def persist_handler(pool: asyncpg.Pool, context: StageContext) -> PersistHandler:
    return PersistHandler(
        DocumentStore(pool),
        context.jobs,
        reembed=ReembedRequests(context.client, context.names, PERSIST),
        max_deliveries=context.consumer.max_deliveries,
    )


def persist_hooks(context: StageContext) -> RuntimeHooks:
    """Dead letters fail their document; with ``results_retention_s``, the results stream
    is kept bounded: entries older than that which every subscriber group has
    acknowledged are trimmed."""
    retention_ms = context.results_retention_s * 1000
    return RuntimeHooks(
        dead_letter_ops=context.jobs.dead_letter_ops(STAGE),
        retain={context.names.results: retention_ms} if retention_ms else None,
    )


PERSIST_STAGE: Stage[asyncpg.Pool, EmbeddedStreamEvent] = Stage(
    names=PERSIST,
    payloads=EMBEDDED_STREAM_EVENTS,
    clients=open_store,
    handler=persist_handler,
    checks=lambda pool: {"postgres": lambda: pool.fetchval("SELECT 1")},
    hooks=persist_hooks,
)


def build_persist_worker(
    client: redis.Redis,
    pool: asyncpg.Pool,
    names: StreamNames,
    settings: ConsumerSettings,
    *,
    tracker: JobTracker | None = None,
    results_retention_s: int = 0,
    events: EventSettings | None = None,
) -> StreamWorker[Decoded[EmbeddedStreamEvent]]:
    """The persist stage's worker over an open Redis client and pool (what ``run_stage``
    builds; the caller owns both)."""
    context = StageContext(
        client,
        names,
        settings,
        events or EventSettings(),
        tracker,
        results_retention_s=results_retention_s,
    )
    return PERSIST_STAGE.build(pool, context)
