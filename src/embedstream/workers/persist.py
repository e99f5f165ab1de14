"""The persist stage: ``document.embedded`` / ``document.removed`` (``v1`` and ``v2``) from
``{prefix}:embedded`` (group ``persister``) into PostgreSQL, the system of record.

Each batch is one transaction (see ``adapters.postgres.repository``); every message then
gets its own outcome: acked with its job bookkeeping when its effect is durable or it was
refused as older than what is stored, dead-lettered when it is poison, retried when the
database is unavailable. An equal version is refused as stale (both type versions of one
event, or a re-embedded event after its reuse, are applied once); a reused embedding
whose content is not stored here waits for it or asks for a re-embed
(``embedstream.workers.reembed``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Final

import asyncpg
import redis.asyncio as redis

from embedstream.adapters.jobs import JobTracker
from embedstream.adapters.postgres import (
    ChunkRow,
    DocumentStore,
    DocumentWrite,
    WriteResult,
    connect_pool,
    is_transient,
    migrate,
)
from embedstream.adapters.redis_client import create_redis
from embedstream.config import ConsumerSettings, EventSettings, Settings
from embedstream.errors import PermanentError, PoisonMessage, RetryableError
from embedstream.logging import get_logger
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import DocumentEmbeddedV2, DocumentRemovedV2, document_event
from embedstream.schemas.tenancy import chunk_id
from embedstream.streams.messages import Ack, DeadLetter, Message, Outcome, Retry
from embedstream.streams.names import PERSISTER_GROUP, StreamNames
from embedstream.streams.runner import RunStats, StreamWorker
from embedstream.workers.health import worker_health
from embedstream.workers.reembed import ReembedRequests, Unapplied, decide

STAGE: Final = "persist"
MAX_BIGINT = 2**63 - 1
MAX_INTEGER = 2**31 - 1
DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
"""PostgreSQL refused the data itself: retrying the same batch cannot help."""

log = get_logger("embedstream.persist")


class PostgresUnavailable(RetryableError):
    """PostgreSQL is away, restarting, overloaded or dropped the connection: retry later."""


class PersistHandler:
    """The batch handler: one ``Outcome`` per message, in order."""

    def __init__(
        self,
        store: DocumentStore,
        tracker: JobTracker,
        *,
        reembed: ReembedRequests | None = None,
        max_deliveries: int = 5,
    ) -> None:
        self.store = store
        self.tracker = tracker
        self.reembed = reembed
        self.max_deliveries = max_deliveries

    async def __call__(self, messages: Sequence[Message[Envelope]]) -> list[Outcome]:
        started = time.perf_counter()
        outcomes: list[Outcome | None] = [None] * len(messages)
        positions: list[int] = []
        writes: list[DocumentWrite] = []
        for position, message in enumerate(messages):
            try:
                writes.append(to_write(message.body))
                positions.append(position)
            except PoisonMessage as exc:
                outcomes[position] = DeadLetter(exc)
        sources = [messages[p] for p in positions]
        for position, outcome in zip(positions, await self._write(writes, sources), strict=True):
            outcomes[position] = outcome
        done = [outcome for outcome in outcomes if outcome is not None]
        log.debug(
            "batch persisted",
            messages=len(messages),
            acked=sum(isinstance(o, Ack) for o in done),
            retried=sum(isinstance(o, Retry) for o in done),
            dead_lettered=sum(isinstance(o, DeadLetter) for o in done),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return done

    async def _write(
        self, writes: list[DocumentWrite], messages: list[Message[Envelope]]
    ) -> list[Outcome]:
        """One outcome per write; ``messages[i]`` is the message of ``writes[i]``."""
        if not writes:
            return []
        try:
            results = await self.store.write(writes)
        except DATA_ERRORS as exc:
            log.warning(
                "postgres refused the batch; writing its documents one by one",
                error=f"{type(exc).__name__}: {exc}",
            )
            return await self._write_each(writes, messages)
        except Exception as exc:
            return [self._retry(exc)] * len(writes)
        return [
            self._outcome(write, result, message)
            for write, result, message in zip(writes, results, messages, strict=True)
        ]

    async def _write_each(
        self, writes: list[DocumentWrite], messages: list[Message[Envelope]]
    ) -> list[Outcome]:
        """Isolate the messages PostgreSQL refuses: one transaction per document."""
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for position, write in enumerate(writes):
            groups[write.document].append(position)
        outcomes: list[Outcome | None] = [None] * len(writes)
        for positions in groups.values():
            group = [writes[p] for p in positions]
            group_outcomes: Iterable[Outcome]
            try:
                results = await self.store.write(group)
                group_outcomes = [
                    self._outcome(w, r, messages[p])
                    for w, r, p in zip(group, results, positions, strict=True)
                ]
            except DATA_ERRORS as exc:
                error = PermanentError(
                    f"postgres refused the document: {type(exc).__name__}: {exc}"
                )
                group_outcomes = [DeadLetter(error)] * len(group)
            except Exception as exc:
                group_outcomes = [self._retry(exc)] * len(group)
            for position, outcome in zip(positions, group_outcomes, strict=True):
                outcomes[position] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _outcome(
        self, write: DocumentWrite, result: WriteResult, message: Message[Envelope]
    ) -> Outcome:
        if result in (WriteResult.CONFLICT, WriteResult.WAITING):
            return self._unapplied_reuse(write, result, message)
        deleted_version = write.version if write.deleted else None
        return Ack(
            ops=(
                self.tracker.stage_done(
                    write.job_id, write.document_id, STAGE, deleted_version=deleted_version
                ),
            )
        )

    def _unapplied_reuse(
        self, write: DocumentWrite, result: WriteResult, message: Message[Envelope]
    ) -> Outcome:
        """A reused embedding whose content is not stored here: wait for its base, or ask
        for a re-embed (``embedstream.workers.reembed``)."""
        decision = (
            Unapplied.REEMBED
            if result is WriteResult.CONFLICT
            else decide(None, None, attempt=message.attempt, max_deliveries=self.max_deliveries)
        )
        event = document_event(message.body)
        if decision is Unapplied.WAIT or self.reembed is None or event is None:
            return Retry(
                RetryableError(
                    f"document {write.document_id!r} version {write.version} reuses the "
                    f"embedding of version {write.base_version} (content "
                    f"{write.content_hash!r}), which is not stored yet; waiting for it"
                )
            )
        assert isinstance(event, DocumentEmbeddedV2)
        log.info(
            "reused embedding not applicable here; re-embed requested",
            document=f"{write.tenant}/{write.document_id}",
            version=event.version,
            base_version=event.base_version,
            result=result.value,
            attempt=message.attempt,
        )
        # no stage mark: the re-embedded event (same version) records it
        return Ack(ops=(self.reembed.op(write.tenant, event, message.body.traceparent),))

    def _retry(self, exc: Exception) -> Retry:
        if is_transient(exc):
            # the runtime logs the retry in one warning line, with this error
            return Retry(PostgresUnavailable(f"postgres unavailable: {type(exc).__name__}: {exc}"))
        log.exception("persisting the batch failed; it will be retried")
        return Retry(exc)


# -- messages to writes ------------------------------------------------------------------


def to_write(envelope: Envelope) -> DocumentWrite:
    """The write a message (``v1`` or ``v2``) stands for; anything unusable raises
    ``PoisonMessage``."""
    event = document_event(envelope)
    if isinstance(event, DocumentEmbeddedV2):
        return embedded_write(event, envelope.tenant)
    if isinstance(event, DocumentRemovedV2):
        return removed_write(event, envelope.tenant)
    raise PoisonMessage(f"unexpected message type {envelope.type!r} for the persist stage")


def removed_write(event: DocumentRemovedV2, tenant: str) -> DocumentWrite:
    version = event.version_number
    _check_version(version)
    _check_texts(event.job_id, event.document_id)
    return DocumentWrite(
        job_id=event.job_id,
        document_id=event.document_id,
        version=version,
        tenant=tenant,
        deleted=True,
    )


def embedded_write(event: DocumentEmbeddedV2, tenant: str) -> DocumentWrite:
    version = event.version_number
    _check_version(version)
    if event.dim > MAX_INTEGER or event.chunk_count > MAX_INTEGER:
        raise PoisonMessage(f"dim {event.dim} or chunk_count {event.chunk_count} out of range")
    _check_texts(event.job_id, event.document_id, event.content_hash, event.model, event.text)
    _check_texts(*event.metadata, *(v for v in event.metadata.values() if isinstance(v, str)))
    try:
        metadata_json = json.dumps(event.metadata, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise PoisonMessage(f"metadata is not storable as JSON: {exc}") from exc
    chunks = () if event.reused else _chunk_rows(event, tenant)
    return DocumentWrite(
        job_id=event.job_id,
        document_id=event.document_id,
        version=version,
        tenant=tenant,
        reused=event.reused,
        base_version=event.base_version_number,
        content_hash=event.content_hash,
        text=event.text,
        metadata_json=metadata_json,
        model=event.model,
        dim=event.dim,
        chunk_count=event.chunk_count,
        chunks=chunks,
    )


def _chunk_rows(event: DocumentEmbeddedV2, tenant: str) -> tuple[ChunkRow, ...]:
    """The chunks as rows; their ids are derived from (tenant, document id, index), as
    the index stage derives Chroma's, whatever id the event names."""
    indexes = sorted(chunk.index for chunk in event.chunks)
    if indexes != list(range(event.chunk_count)):
        raise PoisonMessage(
            f"chunk indexes {indexes[:10]} do not match chunk_count={event.chunk_count}"
        )
    rows: list[ChunkRow] = []
    for chunk in event.chunks:
        _check_texts(chunk.text)
        try:
            raw = base64.b64decode(chunk.vector, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PoisonMessage(f"chunk {chunk.index}: vector is not base64: {exc}") from exc
        if len(raw) != event.dim * 4:
            raise PoisonMessage(
                f"chunk {chunk.index}: vector has {len(raw) / 4:g} float32 values, "
                f"expected dim={event.dim}"
            )
        rows.append(
            ChunkRow(chunk.index, chunk_id(tenant, event.document_id, chunk.index), chunk.text, raw)
        )
    return tuple(rows)


def _check_version(version: int) -> None:
    if version > MAX_BIGINT:
        raise PoisonMessage(f"version {version} does not fit a bigint")


def _check_texts(*texts: str) -> None:
    """PostgreSQL text cannot hold NUL characters."""
    for text in texts:
        if "\x00" in text:
            raise PoisonMessage(f"text contains a NUL character: {text[:40]!r}")


# -- running -----------------------------------------------------------------------------


def build_persist_worker(
    client: redis.Redis,
    pool: asyncpg.Pool,
    names: StreamNames,
    settings: ConsumerSettings,
    *,
    tracker: JobTracker | None = None,
    results_retention_s: int = 0,
    events: EventSettings | None = None,
) -> StreamWorker[Envelope]:
    """The persist stage's stream worker over an open Redis client and pool. With
    ``results_retention_s``, it also keeps the results stream bounded: entries older than
    that which every subscriber group has acknowledged are trimmed."""
    events = events or EventSettings()
    tracker = tracker or JobTracker(client, names, results_versions=events.results_event_versions)
    handler = PersistHandler(
        DocumentStore(pool),
        tracker,
        reembed=ReembedRequests(client, names, STAGE),
        max_deliveries=settings.max_deliveries,
    )
    return StreamWorker[Envelope](
        client,
        names,
        names.embedded,
        PERSISTER_GROUP,
        handler,
        settings,
        stage=STAGE,
        dead_letter_ops=tracker.dead_letter_ops(STAGE),
        retain={names.results: results_retention_s * 1000} if results_retention_s else None,
    )


async def run(settings: Settings, stop: asyncio.Event, *, burst: bool = False) -> RunStats:
    """Run the persist stage until ``stop`` is set (or, with ``burst``, until the stream
    has nothing left): connect, migrate, consume, close."""
    client = create_redis(settings.redis)
    try:
        async with worker_health(settings.health, STAGE, stop) as health:
            pool = await connect_pool(settings.postgres, stop)
            if pool is None:
                return RunStats()
            try:
                if not await _migrate(pool, settings.postgres.database_schema, stop):
                    return RunStats()
                worker = build_persist_worker(
                    client,
                    pool,
                    settings.redis.names,
                    settings.consumer,
                    results_retention_s=settings.redis.results_retention_s,
                    events=settings.events,
                )
                health.watch(
                    worker.heartbeat,
                    {"redis": client.ping, "postgres": lambda: pool.fetchval("SELECT 1")},
                )
                return await worker.run(stop, burst=burst)
            finally:
                await _close_pool(pool)
    finally:
        await client.aclose()


async def _migrate(pool: asyncpg.Pool, schema: str, stop: asyncio.Event) -> bool:
    """Apply migrations, waiting out a PostgreSQL that went away after the pool was made
    (a worker does not die at start of an outage). False when stopped while waiting."""
    failures = 0
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                await migrate(conn, schema)
            return True
        except Exception as exc:
            if not is_transient(exc):
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
