"""The index stage: ``document.embedded`` / ``document.removed`` (``v1`` and ``v2``) from
``{prefix}:embedded`` (group ``indexer``) into Chroma.

A document is (tenant, document id): the envelope's tenant and the payload's id, joined
as the document key ``{tenant}/{document_id}`` for locks, the version register and
Chroma chunk ids. Per batch: decode and validate each message (poison and model
mismatches are dead-lettered one by one), lock the batch's documents, drop what the version register
says is superseded (an equal version too: both type versions of one event, or a
re-embedded event after its reuse, are applied once), fold each document's remaining
events into one write, apply all writes in as few Chroma calls as possible, advance the
register, release. See ``embedstream.workers.index_order`` for the ordering rules, and
``embedstream.workers.reembed`` for a reused embedding whose chunks are not here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import redis.asyncio as redis

from embedstream.adapters.chroma import (
    ChromaIndex,
    ChunkRecord,
    ChunksNotIndexed,
    DocumentWrite,
    RefreshDocument,
    RemoveDocument,
    ReplaceDocument,
    chunk_id,
    chunk_metadata,
    document_key,
)
from embedstream.adapters.jobs import JobTracker
from embedstream.adapters.redis_client import create_redis
from embedstream.config import ConsumerSettings, EventSettings, Settings
from embedstream.errors import PermanentError, PoisonMessage, RetryableError
from embedstream.logging import get_logger
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import (
    DOCUMENT_EMBEDDED,
    DOCUMENT_EMBEDDED_V2,
    DOCUMENT_REMOVED,
    DOCUMENT_REMOVED_V2,
    DocumentEmbeddedV2,
    DocumentRemovedV2,
    document_event,
)
from embedstream.schemas.vectors import Vector, decode_vector
from embedstream.streams.messages import Ack, Message, Outcome, Retry, outcome_for
from embedstream.streams.names import INDEXER_GROUP, StreamNames
from embedstream.streams.runner import RunStats, StreamWorker
from embedstream.workers.health import worker_health
from embedstream.workers.index_order import DocumentOrder, Lease, newer
from embedstream.workers.reembed import ReembedRequests, Unapplied, decide

STAGE: Final = "index"

log = get_logger("embedstream.index")


class DocumentLocked(RetryableError):
    """Another replica is writing the same document right now."""


class SupersededPending(RetryableError):
    """An older event of a document whose newest event in the batch could not be written."""


@dataclass(frozen=True)
class Change:
    """One decoded event of the batch."""

    position: int
    tenant: str
    event: DocumentEmbeddedV2 | DocumentRemovedV2
    vectors: tuple[Vector, ...] = ()
    attempt: int = 1
    traceparent: str | None = None

    @property
    def document_id(self) -> str:
        return self.event.document_id

    @property
    def key(self) -> str:
        """The document key ``{tenant}/{document_id}``."""
        return document_key(self.tenant, self.event.document_id)

    @property
    def version(self) -> int:
        return self.event.version_number


@dataclass
class DocumentPlan:
    """What to write for one document and which messages it settles."""

    key: str
    tenant: str
    document_id: str
    changes: list[Change] = field(default_factory=list)

    @property
    def latest(self) -> Change:
        return self.changes[-1]


class IndexHandler:
    """Batch handler of the index stage (see the module doc)."""

    def __init__(
        self,
        index: ChromaIndex,
        order: DocumentOrder,
        tracker: JobTracker,
        *,
        store_documents: bool = False,
        lock_wait_s: float = 1.0,
        reembed: ReembedRequests | None = None,
        max_deliveries: int = 5,
    ) -> None:
        self.index = index
        self.lock_wait_s = lock_wait_s
        self.order = order
        self.tracker = tracker
        self.store_documents = store_documents
        self.reembed = reembed
        self.max_deliveries = max_deliveries

    async def __call__(self, messages: Sequence[Message[Envelope]]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(messages)
        by_document: dict[str, list[Change]] = {}
        for position, message in enumerate(messages):
            try:
                change = await self._decode(position, message.body, message.attempt)
            except Exception as exc:
                outcomes[position] = outcome_for(exc)
                continue
            by_document.setdefault(change.key, []).append(change)

        await self._write_in_rounds(by_document, outcomes)
        return [o if o is not None else Retry(RuntimeError("no outcome")) for o in outcomes]

    async def _write_in_rounds(
        self, by_document: dict[str, list[Change]], outcomes: list[Outcome | None]
    ) -> None:
        """Write the documents that can be locked; documents another replica holds are
        waited for (without holding any lock) for up to ``lock_wait_s``, then retried."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_wait_s
        delay = 0.005
        while by_document:
            async with self.order.hold(by_document) as lease:
                await self._write(by_document, lease, outcomes)
            by_document = {doc: by_document[doc] for doc in lease.busy}
            if not by_document:
                return
            if loop.time() + delay > deadline:
                break
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.2)
        for key, changes in by_document.items():
            locked = DocumentLocked(f"document {key!r} is being indexed elsewhere")
            for change in changes:
                outcomes[change.position] = Retry(locked)

    # -- decoding --------------------------------------------------------------------

    async def _decode(self, position: int, envelope: Envelope, attempt: int = 1) -> Change:
        event = document_event(envelope)
        if event is None:
            raise PoisonMessage(
                f"unexpected event type {envelope.type!r}: the index stage handles "
                f"{DOCUMENT_EMBEDDED}, {DOCUMENT_REMOVED}, {DOCUMENT_EMBEDDED_V2} and "
                f"{DOCUMENT_REMOVED_V2}"
            )
        tenant, trace = envelope.tenant, envelope.traceparent
        if isinstance(event, DocumentRemovedV2):
            return Change(position, tenant, event, attempt=attempt, traceparent=trace)
        vectors = () if event.reused else _vectors(event)
        await self.index.require_model(event.model, event.dim)
        return Change(position, tenant, event, vectors, attempt=attempt, traceparent=trace)

    # -- writing ---------------------------------------------------------------------

    async def _write(
        self,
        by_document: dict[str, list[Change]],
        lease: Lease,
        outcomes: list[Outcome | None],
    ) -> None:
        plans: list[DocumentPlan] = []
        superseded = 0
        for key, changes in by_document.items():
            if key in lease.busy:
                continue
            registered = lease.registered[key]
            first = changes[0]
            plan = DocumentPlan(key, first.tenant, first.document_id)
            for change in sorted(changes, key=lambda c: c.version):
                if newer(change.version, registered):
                    plan.changes.append(change)
                else:
                    outcomes[change.position] = self._ack(change)
                    superseded += 1
            if plan.changes:
                plans.append(plan)

        results = await self._apply(plans)
        for plan in plans:
            error = results.get(plan.key)
            if error is None:
                lease.advance(plan.key, plan.latest.version)
            self._settle(plan, error, lease.registered[plan.key], outcomes)
        if not plans and not superseded:
            return
        log.debug(
            "index batch written",
            documents=len(plans),
            failed=len(results),
            superseded=superseded,
            busy=len(lease.busy),
        )

    async def _apply(self, plans: list[DocumentPlan]) -> dict[str, BaseException]:
        """Write every plan in one batch; if Chroma rejects the batch, write the plans one
        by one so that a bad document cannot hold the others back."""
        if not plans:
            return {}
        writes = [self._plan_write(plan) for plan in plans]
        try:
            return dict(await self.index.apply(writes))
        except Exception as exc:
            error = _classify(exc)
            if len(writes) == 1 or not isinstance(error, PermanentError):
                return {plan.key: error for plan in plans}
            log.warning("chroma refused a batch, writing one by one", error=str(exc))
        results: dict[str, BaseException] = {}
        for write in writes:
            try:
                results.update(await self.index.apply([write]))
            except Exception as exc:
                results[write.key] = _classify(exc)
        return results

    def _settle(
        self,
        plan: DocumentPlan,
        error: BaseException | None,
        registered: int | None,
        outcomes: list[Outcome | None],
    ) -> None:
        """Every event of a written plan is done. If the write failed, the newest event
        carries the error and the older ones are tried again on their own; a reused
        embedding whose chunks are not here waits for them or asks for a re-embed."""
        if isinstance(error, ChunksNotIndexed) and self._reembed(plan, registered, outcomes):
            return
        for change in plan.changes:
            if error is None:
                outcomes[change.position] = self._ack(change)
            elif change is plan.latest:
                outcomes[change.position] = outcome_for(_classify(error))
            else:
                outcomes[change.position] = Retry(
                    SupersededPending(f"newer event of {plan.key!r} failed: {error}")
                )

    def _reembed(
        self, plan: DocumentPlan, registered: int | None, outcomes: list[Outcome | None]
    ) -> bool:
        """For a plan ending in a reused embedding that found no chunks of its content:
        ask for a re-embed when ``reembed.decide`` says so (True: outcomes set)."""
        latest = plan.latest
        event = latest.event
        if self.reembed is None or not isinstance(event, DocumentEmbeddedV2) or not event.reused:
            return False
        decision = decide(
            registered,
            event.base_version_number,
            attempt=latest.attempt,
            max_deliveries=self.max_deliveries,
        )
        if decision is Unapplied.WAIT:
            return False
        log.info(
            "reused embedding not applicable here; re-embed requested",
            document=plan.key,
            version=event.version,
            base_version=event.base_version,
            registered=registered,
            attempt=latest.attempt,
        )
        request = self.reembed.op(latest.tenant, event, latest.traceparent)
        for change in plan.changes:
            if change is latest:
                # no stage mark: the re-embedded event (same version) records it
                outcomes[change.position] = Ack(ops=(request,))
            elif change.version == latest.version:
                outcomes[change.position] = Ack()  # the same event in another type version
            else:
                outcomes[change.position] = Retry(
                    SupersededPending(f"newer event of {plan.key!r} needs a re-embed")
                )
        return True

    def _ack(self, change: Change) -> Ack:
        event = change.event
        deleted = change.version if isinstance(event, DocumentRemovedV2) else None
        op = self.tracker.stage_done(
            event.job_id, event.document_id, STAGE, deleted_version=deleted
        )
        return Ack(ops=(op,))

    # -- folding a document's events into one write ----------------------------------

    def _plan_write(self, plan: DocumentPlan) -> DocumentWrite:
        """The state after the plan's events in version order: a removal empties the
        document, a full embedding replaces it, a reused embedding re-labels the latest
        full embedding of the same content (in this batch, or else in Chroma)."""
        base: Change | None = None
        for change in plan.changes:
            event = change.event
            if isinstance(event, DocumentRemovedV2):
                base = None
            elif not event.reused:
                base = change
            elif base is not None and _content(base) != event.content_hash:
                base = None
        latest = plan.latest.event
        tenant, document_id = plan.tenant, plan.document_id
        if isinstance(latest, DocumentRemovedV2):
            return RemoveDocument(tenant, document_id)
        if base is None:
            return RefreshDocument(
                tenant,
                document_id,
                latest.content_hash,
                [self._metadata(tenant, latest, n) for n in range(latest.chunk_count)],
            )
        assert isinstance(base.event, DocumentEmbeddedV2)
        return ReplaceDocument(
            tenant, document_id, self._records(tenant, base.event, base.vectors, latest)
        )

    def _records(
        self,
        tenant: str,
        content: DocumentEmbeddedV2,
        vectors: Sequence[Vector],
        labels: DocumentEmbeddedV2,
    ) -> list[ChunkRecord]:
        return [
            ChunkRecord(
                id=chunk_id(tenant, content.document_id, chunk.index),
                embedding=vector,
                metadata=self._metadata(tenant, labels, chunk.index),
                document=chunk.text if self.store_documents else None,
            )
            for chunk, vector in zip(content.chunks, vectors, strict=True)
        ]

    @staticmethod
    def _metadata(
        tenant: str, event: DocumentEmbeddedV2, index: int
    ) -> dict[str, str | int | float | bool]:
        return chunk_metadata(
            event.metadata,
            tenant=tenant,
            document_id=event.document_id,
            index=index,
            version=event.version_number,
            job_id=event.job_id,
            content_hash=event.content_hash,
        )


def _content(change: Change) -> str:
    assert isinstance(change.event, DocumentEmbeddedV2)
    return change.event.content_hash


def _vectors(event: DocumentEmbeddedV2) -> tuple[Vector, ...]:
    """Decode and check a full embedding: chunks ``0..chunk_count-1``, ``dim`` floats."""
    indexes = sorted(chunk.index for chunk in event.chunks)
    if indexes != list(range(event.chunk_count)):
        raise PoisonMessage(
            f"document {event.document_id!r}: chunk indexes {indexes[:10]} do not match "
            f"chunk_count={event.chunk_count}"
        )
    try:
        return tuple(decode_vector(chunk.vector, event.dim) for chunk in event.chunks)
    except ValueError as exc:
        raise PoisonMessage(f"document {event.document_id!r}: bad vector: {exc}") from exc


def _classify(error: BaseException) -> BaseException:
    """Chroma's validation errors are permanent; anything else is worth a retry."""
    if isinstance(error, PermanentError | RetryableError):
        return error
    if isinstance(error, ValueError | TypeError) or type(error).__name__ in (
        "InvalidArgumentError",
        "InvalidDimensionException",
    ):
        return PermanentError(f"chroma refused the write: {type(error).__name__}: {error}")
    return error


# -- assembling and running --------------------------------------------------------


def build_index_worker(
    client: redis.Redis,
    names: StreamNames,
    consumer: ConsumerSettings,
    index: ChromaIndex,
    *,
    tracker: JobTracker | None = None,
    store_documents: bool | None = None,
    lock_wait_s: float | None = None,
    events: EventSettings | None = None,
) -> StreamWorker[Envelope]:
    """The index worker over an opened ``ChromaIndex`` (the caller owns both clients).
    ``lock_wait_s`` (default: half the visibility timeout) bounds how long a batch waits
    for documents another replica is writing before it retries them."""
    events = events or EventSettings()
    tracker = tracker or JobTracker(client, names, results_versions=events.results_event_versions)
    order = DocumentOrder(client, names, lock_ttl_ms=consumer.visibility_timeout_ms)
    handler = IndexHandler(
        index,
        order,
        tracker,
        store_documents=(
            index.settings.chroma_store_documents if store_documents is None else store_documents
        ),
        lock_wait_s=(consumer.visibility_timeout_ms / 2000 if lock_wait_s is None else lock_wait_s),
        reembed=ReembedRequests(client, names, STAGE),
        max_deliveries=consumer.max_deliveries,
    )
    return StreamWorker(
        client,
        names,
        names.embedded,
        INDEXER_GROUP,
        handler,
        consumer,
        stage=STAGE,
        dead_letter_ops=tracker.dead_letter_ops(STAGE),
    )


async def run(settings: Settings, stop: asyncio.Event, *, burst: bool = False) -> RunStats:
    """Run one index worker until ``stop`` is set (or, with ``burst``, until idle)."""
    client = create_redis(settings.redis)
    index = ChromaIndex(settings.chroma)
    try:
        async with worker_health(settings.health, STAGE, stop) as health:
            # an embedded folder has one writer: a second replica waits here as a standby
            # (live, not ready)
            if not await index.acquire_writer(stop):
                return RunStats()
            try:
                await index.open(stop)
            except Exception:
                if stop.is_set():  # stopped while waiting for a Chroma server
                    return RunStats()
                raise
            worker = build_index_worker(
                client, settings.redis.names, settings.consumer, index, events=settings.events
            )
            health.watch(worker.heartbeat, {"redis": client.ping, "chroma": index.heartbeat})
            return await worker.run(stop, burst=burst)
    finally:
        await asyncio.to_thread(index.close)
        await client.aclose()
