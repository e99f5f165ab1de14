"""The index stage: ``document.embedded`` / ``document.removed`` (``v1`` and ``v2``) from
``{prefix}:embedded`` (group ``indexer``) into Chroma.

A document is (tenant, document id): the envelope's tenant and the payload's id, joined
as the document key ``{tenant}/{document_id}`` for locks, the version register and
Chroma chunk ids. Per batch: check each embedding's model against the collection (a
mismatch is dead-lettered on its own), lock the batch's documents, drop what the version
register says is applied already, fold each document's remaining events into one write
(``embedstream.workers.index_plan``), apply all writes in as few Chroma calls as
possible, advance the register, release. See ``embedstream.workers.index_order`` for the
ordering rules, and ``embedstream.workers.reembed`` for a reused embedding whose chunks
are not here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import redis.asyncio as redis

from embedstream.adapters.chroma.index import ChromaIndex
from embedstream.adapters.chroma.writes import ChunksNotIndexed
from embedstream.config import ConsumerSettings, EventSettings, Settings
from embedstream.errors import PermanentError, RetryableError
from embedstream.errors.chroma import classify_write_error
from embedstream.jobs.results import JobContext
from embedstream.jobs.tracker import JobTracker
from embedstream.logging import get_logger
from embedstream.metrics.runtime import store_write
from embedstream.schemas.events import (
    EMBEDDED_STREAM_EVENTS,
    DocumentEmbeddedV2,
    DocumentRemovedV2,
    EmbeddedStreamEvent,
    as_v2,
)
from embedstream.streams.batch import RuntimeHooks
from embedstream.streams.decoding import Decoded
from embedstream.streams.messages import Ack, Message, Outcome, Retry, outcome_for
from embedstream.streams.names import INDEX, StreamNames
from embedstream.streams.outcomes import Outcomes
from embedstream.streams.runner import StreamWorker
from embedstream.workers.index_order import DocumentLocks, DocumentOrder
from embedstream.workers.index_plan import (
    Change,
    DocumentChanges,
    by_document,
    plan_write,
    split_superseded,
)
from embedstream.workers.reembed import ReembedRequests, Unapplied, decide
from embedstream.workers.stage import Stage, StageContext

STAGE: Final = INDEX.name

log = get_logger("embedstream.index")


class DocumentLocked(RetryableError):
    """Another replica is writing the same document right now."""


class SupersededPending(RetryableError):
    """An older event of a document whose newest event in the batch could not be written."""


@dataclass
class IndexHandler:
    """Batch handler of the index stage (see the module doc)."""

    index: ChromaIndex
    order: DocumentOrder
    tracker: JobTracker
    store_documents: bool = False
    lock_wait_s: float = 1.0
    reembed: ReembedRequests | None = None
    max_deliveries: int = 5

    async def __call__(
        self, messages: Sequence[Message[Decoded[EmbeddedStreamEvent]]]
    ) -> list[Outcome]:
        outcomes = Outcomes(messages, stage=STAGE)
        changes: list[Change] = []
        for position, message in enumerate(messages):
            envelope, event = message.body.envelope, as_v2(message.body.payload)
            if isinstance(event, DocumentEmbeddedV2):
                try:
                    await self.index.require_model(event.model, event.dim)
                except Exception as exc:
                    outcomes.fail(position, exc)
                    continue
            changes.append(
                Change(position, envelope.tenant, event, message.attempt, envelope.traceparent)
            )
        await self._write_in_rounds(by_document(changes), outcomes)
        return outcomes.result()

    async def _write_in_rounds(
        self, documents: dict[str, list[Change]], outcomes: Outcomes
    ) -> None:
        """Write the documents that can be locked; documents another replica holds are
        waited for (without holding any lock) for up to ``lock_wait_s``, then retried."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_wait_s
        delay = 0.005
        while documents:
            async with self.order.hold(documents) as locks:
                await self._write(documents, locks, outcomes)
            documents = {doc: documents[doc] for doc in locks.busy}
            if not documents:
                return
            if loop.time() + delay > deadline:
                break
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.2)
        for key, changes in documents.items():
            locked = DocumentLocked(f"document {key!r} is being indexed elsewhere")
            for change in changes:
                outcomes[change.position] = Retry(locked)

    # -- writing ---------------------------------------------------------------------

    async def _write(
        self, documents: dict[str, list[Change]], locks: DocumentLocks, outcomes: Outcomes
    ) -> None:
        pending: list[DocumentChanges] = []
        superseded = 0
        for key, changes in documents.items():
            if key in locks.busy:
                continue
            document, applied = split_superseded(changes, locks.registered[key])
            for change in applied:
                outcomes[change.position] = self._ack(change)
            superseded += len(applied)
            if document is not None:
                pending.append(document)

        results = await self._apply(pending)
        for document in pending:
            error = results.get(document.key)
            if error is None:
                locks.advance(document.key, document.latest.version)
            self._settle(document, error, locks.registered[document.key], outcomes)
        if not pending and not superseded:
            return
        log.debug(
            "index batch written",
            documents=len(pending),
            failed=len(results),
            superseded=superseded,
            busy=len(locks.busy),
        )

    async def _apply(self, documents: list[DocumentChanges]) -> dict[str, BaseException]:
        """Write every document in one batch; if Chroma refuses the batch, write the
        documents one by one so that a bad document cannot hold the others back."""
        if not documents:
            return {}
        writes = [plan_write(d, store_documents=self.store_documents) for d in documents]
        try:
            with store_write("chroma"):
                return dict(await self.index.apply(writes))
        except Exception as exc:
            error = classify_write_error(exc)
            if len(writes) == 1 or not isinstance(error, PermanentError):
                return {document.key: error for document in documents}
            log.warning("chroma refused a batch, writing one by one", error=str(exc))
        results: dict[str, BaseException] = {}
        for write in writes:
            try:
                with store_write("chroma"):
                    results.update(await self.index.apply([write]))
            except Exception as exc:
                results[write.key] = classify_write_error(exc)
        return results

    def _settle(
        self,
        document: DocumentChanges,
        error: BaseException | None,
        registered: int | None,
        outcomes: Outcomes,
    ) -> None:
        """Every event of a written document is done. If the write failed, the newest
        event carries the error and the older ones are tried again on their own; a reused
        embedding whose chunks are not here waits for them or asks for a re-embed."""
        if isinstance(error, ChunksNotIndexed) and self._reembed(document, registered, outcomes):
            return
        for change in document.changes:
            if error is None:
                outcomes[change.position] = self._ack(change)
            elif change is document.latest:
                outcomes[change.position] = outcome_for(classify_write_error(error))
            else:
                outcomes[change.position] = Retry(
                    SupersededPending(f"newer event of {document.key!r} failed: {error}")
                )

    def _reembed(
        self, document: DocumentChanges, registered: int | None, outcomes: Outcomes
    ) -> bool:
        """For a document ending in a reused embedding that found no chunks of its
        content: ask for a re-embed when ``reembed.decide`` says so (True: outcomes set)."""
        latest = document.latest
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
            document=document.key,
            version=event.version,
            base_version=event.base_version,
            registered=registered,
            attempt=latest.attempt,
        )
        request = self.reembed.op(latest.tenant, event, latest.traceparent)
        for change in document.changes:
            if change is latest:
                # no stage mark: the re-embedded event (same version) records it
                outcomes[change.position] = Ack(ops=(request,))
            elif change.version == latest.version:
                outcomes[change.position] = Ack()  # the same event in another type version
            else:
                outcomes[change.position] = Retry(
                    SupersededPending(f"newer event of {document.key!r} needs a re-embed")
                )
        return True

    def _ack(self, change: Change) -> Ack:
        event = change.event
        deleted = change.version if isinstance(event, DocumentRemovedV2) else None
        op = self.tracker.stage_done(
            event.job_id,
            event.document_id,
            STAGE,
            job=JobContext(change.tenant, change.traceparent),
            deleted_version=deleted,
        )
        return Ack(ops=(op,))


# -- the stage ------------------------------------------------------------------------


@asynccontextmanager
async def open_index(settings: Settings, stop: asyncio.Event) -> AsyncIterator[ChromaIndex | None]:
    """The Chroma collection; None when ``stop`` is set first. An embedded folder has one
    writer: a second replica waits here as a standby (live, not ready); a Chroma server
    that does not answer yet is waited for."""
    index = ChromaIndex(settings.chroma)
    try:
        if not await index.acquire_writer(stop):
            yield None
            return
        try:
            await index.open(stop)
        except Exception:
            if not stop.is_set():
                raise
            yield None  # stopped while waiting for a Chroma server
            return
        yield index
    finally:
        await asyncio.to_thread(index.close)


def index_handler(
    index: ChromaIndex,
    context: StageContext,
    *,
    store_documents: bool | None = None,
    lock_wait_s: float | None = None,
) -> IndexHandler:
    """``lock_wait_s`` (default: half the visibility timeout) bounds how long a batch
    waits for documents another replica is writing before it retries them."""
    consumer = context.consumer
    return IndexHandler(
        index,
        DocumentOrder(context.client, context.names, lock_ttl_ms=consumer.visibility_timeout_ms),
        context.jobs,
        store_documents=(
            index.settings.chroma_store_documents if store_documents is None else store_documents
        ),
        lock_wait_s=consumer.visibility_timeout_ms / 2000 if lock_wait_s is None else lock_wait_s,
        reembed=ReembedRequests(context.client, context.names, INDEX),
        max_deliveries=consumer.max_deliveries,
    )


INDEX_STAGE: Stage[ChromaIndex, EmbeddedStreamEvent] = Stage(
    names=INDEX,
    payloads=EMBEDDED_STREAM_EVENTS,
    clients=open_index,
    handler=index_handler,
    checks=lambda index: {"chroma": index.heartbeat},
    hooks=lambda context: RuntimeHooks(dead_letter_ops=context.jobs.dead_letter_ops(STAGE)),
)


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
) -> StreamWorker[Decoded[EmbeddedStreamEvent]]:
    """The index stage's worker over an opened ``ChromaIndex`` (what ``run_stage``
    builds; the caller owns both clients)."""
    context = StageContext(client, names, consumer, events or EventSettings(), tracker)
    handler = index_handler(
        index, context, store_documents=store_documents, lock_wait_s=lock_wait_s
    )
    return INDEX_STAGE.worker(context, handler)
