"""The embed stage: commands on ``{prefix}:ingest`` become events on ``{prefix}:embedded``.

``document.upsert.v1`` -> ``document.embedded`` (chunks and vectors), ``document.delete.v1``
-> ``document.removed``, each with the command's version (its ingest entry id), and
``document.reembed.v1`` -> ``document.embedded`` at the version it names. Events go out in
the type versions ``EMBEDSTREAM_EMBEDDED_EVENT_VERSIONS`` names (``v1`` and ``v2`` by
default: the same event twice, see ``embedstream.schemas.events``). Events carry the
command's tenant and trace context. All chunks of all upserts in a batch go through one
embedder call; an upsert whose text is unchanged since its document's last embedding may
be answered without encoding (``embedstream.workers.reuse``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeAlias

import redis.asyncio as redis
from pydantic import BaseModel

from embedstream import tracing
from embedstream.adapters.chunking import Chunk, Chunker
from embedstream.adapters.embedder import Embedder, load_embedder
from embedstream.config import ConsumerSettings, EmbedSettings, EventSettings, Settings
from embedstream.errors import PermanentError, PoisonMessage
from embedstream.jobs.inflight import InFlight
from embedstream.jobs.results import JobContext
from embedstream.jobs.tracker import JobTracker
from embedstream.logging import get_logger
from embedstream.schemas.commands import (
    DOCUMENT_DELETE,
    DOCUMENT_REEMBED,
    DOCUMENT_UPSERT,
    DocumentDelete,
    DocumentReembed,
    DocumentUpsert,
)
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import (
    BIGINT_MAX,
    DOCUMENT_EMBEDDED,
    DOCUMENT_EMBEDDED_V2,
    DOCUMENT_REMOVED,
    DOCUMENT_REMOVED_V2,
    DocumentEmbeddedV2,
    DocumentRemovedV2,
    EmbeddedChunk,
)
from embedstream.schemas.tenancy import chunk_id, document_key
from embedstream.schemas.vectors import encode_vector
from embedstream.schemas.versions import parse_version, version_text
from embedstream.streams.batch import RuntimeHooks
from embedstream.streams.decoding import Decoded
from embedstream.streams.messages import Ack, Message, Outcome, Publish
from embedstream.streams.names import EMBED, StreamNames, stream_id_to_version
from embedstream.streams.outcomes import Outcomes
from embedstream.streams.runner import StreamWorker
from embedstream.workers.reembed import reembed_aware_dead_letter_ops
from embedstream.workers.reuse import (
    EmbeddingRegister,
    ReuseCandidate,
    StoredEmbedding,
    content_hash,
)
from embedstream.workers.stage import Stage, StageContext

SOURCE = "embedstream.embed"

Command: TypeAlias = DocumentUpsert | DocumentDelete | DocumentReembed
COMMANDS: dict[str, type[Command]] = {
    DOCUMENT_UPSERT: DocumentUpsert,
    DOCUMENT_DELETE: DocumentDelete,
    DOCUMENT_REEMBED: DocumentReembed,
}
EMBEDDED_TYPES = {1: DOCUMENT_EMBEDDED, 2: DOCUMENT_EMBEDDED_V2}
REMOVED_TYPES = {1: DOCUMENT_REMOVED, 2: DOCUMENT_REMOVED_V2}

log = get_logger("embedstream.embed")


def command_version(entry_id: str, command: Command) -> int:
    """The command's version: its ingest entry id as one integer, or, for a re-embed
    request, the version it names (the model bounds it). An entry id beyond what the
    stores' versions hold (PostgreSQL's bigint) is poison, refused before either store
    could disagree about it."""
    if isinstance(command, DocumentReembed):
        return parse_version(command.version)
    version = stream_id_to_version(entry_id)
    if version > BIGINT_MAX:
        raise PoisonMessage(f"ingest entry id {entry_id} is beyond the versions stores hold")
    return version


@dataclass(frozen=True)
class _Command:
    """A command of this batch, with its position and version."""

    index: int
    message: Message[Decoded[Command]]
    command: Command
    version: int

    @property
    def envelope(self) -> Envelope:
        return self.message.body.envelope

    @property
    def key(self) -> str:
        """The document key ``{tenant}/{document_id}``."""
        return document_key(self.envelope.tenant, self.command.document_id)


@dataclass(frozen=True)
class _Upsert(_Command):
    """An upsert, or a re-embed request (never answered with a reuse)."""

    command: DocumentUpsert | DocumentReembed
    content_hash: str

    @property
    def may_reuse(self) -> bool:
        return isinstance(self.command, DocumentUpsert)

    def candidate(self) -> ReuseCandidate:
        return ReuseCandidate(self.message.id, self.key, self.content_hash, self.version)


@dataclass(frozen=True)
class _Delete(_Command):
    command: DocumentDelete


@dataclass(frozen=True)
class EmbedModel:
    """What the embed stage opens: the model, and a chunker whose windows fit it."""

    embedder: Embedder
    chunker: Chunker


class EmbedHandler:
    """Batch handler for the ingest stream (group ``embedder``)."""

    def __init__(
        self,
        client: redis.Redis,
        names: StreamNames,
        embedder: Embedder,
        chunker: Chunker,
        tracker: JobTracker,
        *,
        source: str = SOURCE,
        event_versions: Sequence[int] = (1, 2),
    ) -> None:
        self.names = names
        self.embedder = embedder
        self.chunker = chunker
        self.tracker = tracker
        self.source = source
        self.event_versions = tuple(event_versions)
        self.profile = f"{embedder.name}:{embedder.dim}:{chunker.chunk_tokens}:{chunker.overlap}"
        self.register = EmbeddingRegister(client, names)

    async def __call__(self, messages: Sequence[Message[Decoded[Command]]]) -> list[Outcome]:
        started = time.perf_counter()
        outcomes = Outcomes(messages, stage=EMBED.name)
        upserts: list[_Upsert] = []
        deletes: list[_Delete] = []
        for i, message in enumerate(messages):
            command = message.body.payload
            try:
                version = command_version(message.id, command)
            except PoisonMessage as exc:
                outcomes.fail(i, exc)
                continue
            if isinstance(command, DocumentDelete):
                deletes.append(_Delete(i, message, command, version))
            else:
                upserts.append(_Upsert(i, message, command, version, content_hash(command.text)))

        for d in deletes:
            outcomes[d.index] = self._removed(d)
        candidates = [u.candidate() for u in upserts if u.may_reuse]
        reusable = await self.register.reusable(candidates, self.profile)
        fresh: list[_Upsert] = []
        for u in upserts:
            stored = reusable.get(u.message.id)
            if stored is None:
                fresh.append(u)
            else:
                outcomes[u.index] = self._embedded(u, None, stored.chunk_count, stored.version)
        chunks, encode_s = await self._embed(fresh)
        for u in fresh:
            doc_chunks = chunks[u.content_hash]
            if doc_chunks:
                outcomes[u.index] = self._embedded(u, doc_chunks, len(doc_chunks), None)
            else:
                outcomes.fail(
                    u.index,
                    PermanentError(
                        f"document {u.command.document_id!r} has no text to embed "
                        "(empty or whitespace only)"
                    ),
                )

        log.info(
            "embed batch",
            messages=len(messages),
            upserts=len(upserts),
            deletes=len(deletes),
            reused=len(reusable),
            embedded=len(fresh),
            reembeds=sum(not u.may_reuse for u in upserts),
            chunks=sum(len(c) for c in chunks.values()),
            tokens=sum(ch.tokens for c in chunks.values() for ch, _ in c),
            encode_s=round(encode_s, 3),
            batch_s=round(time.perf_counter() - started, 3),
        )
        return outcomes.result()

    # -- steps -----------------------------------------------------------------------

    async def _embed(
        self, upserts: list[_Upsert]
    ) -> tuple[dict[str, list[tuple[Chunk, str]]], float]:
        """Chunk each distinct text once and embed every chunk in one embedder call.
        Returns chunks with base64 vectors by content hash, and the encode time."""
        texts: dict[str, str] = {}
        for u in upserts:
            texts.setdefault(u.content_hash, u.command.text)
        if not texts:
            return {}, 0.0
        split = await asyncio.to_thread(self.chunker.split_many, list(texts.values()))
        flat = [chunk for chunks in split for chunk in chunks]
        started = time.perf_counter()
        with tracing.span(
            "encode", {"embedstream.chunks": len(flat), "embedstream.model": self.embedder.name}
        ):
            vectors = await self.embedder.encode([c.text for c in flat], [c.tokens for c in flat])
        encode_s = time.perf_counter() - started
        encoded = iter(encode_vector(v) for v in vectors)
        by_hash = {
            digest: [(chunk, next(encoded)) for chunk in chunks]
            for digest, chunks in zip(texts, split, strict=True)
        }
        return by_hash, encode_s

    # -- outcomes --------------------------------------------------------------------

    def _embedded(
        self,
        u: _Upsert,
        chunks: list[tuple[Chunk, str]] | None,
        chunk_count: int,
        base_version: int | None,
    ) -> Ack:
        doc, tenant = u.command.document_id, u.envelope.tenant
        event = DocumentEmbeddedV2(
            job_id=u.command.job_id,
            document_id=doc,
            version=version_text(u.version),
            content_hash=u.content_hash,
            model=self.embedder.name,
            dim=self.embedder.dim,
            text=u.command.text,
            metadata=u.command.metadata,
            chunk_count=chunk_count,
            reused=chunks is None,
            base_version=None if base_version is None else version_text(base_version),
            chunks=[
                EmbeddedChunk(
                    id=chunk_id(tenant, doc, c.index), index=c.index, text=c.text, vector=v
                )
                for c, v in chunks or ()
            ],
        )
        publish = [
            self._publish(u, EMBEDDED_TYPES[v], event.to_v1() if v == 1 else event)
            for v in self.event_versions
        ]
        stored = StoredEmbedding(u.content_hash, u.version, chunk_count, self.profile)
        return self._ack(u, publish, stored)

    def _removed(self, d: _Delete) -> Ack:
        event = DocumentRemovedV2(
            job_id=d.command.job_id,
            document_id=d.command.document_id,
            version=version_text(d.version),
        )
        publish = [
            self._publish(d, REMOVED_TYPES[v], event.to_v1() if v == 1 else event)
            for v in self.event_versions
        ]
        return self._ack(d, publish, StoredEmbedding.tombstone(d.version))

    def _publish(self, c: _Command, event_type: str, payload: BaseModel) -> Publish:
        envelope = Envelope.wrap(
            event_type,
            payload,
            source=self.source,
            tenant=c.envelope.tenant,
            subject=c.command.document_id,
            traceparent=c.envelope.traceparent,
        )
        return Publish.event(self.names.embedded, envelope)

    def _ack(self, c: _Command, publish: list[Publish], stored: StoredEmbedding) -> Ack:
        job = JobContext(c.envelope.tenant, c.envelope.traceparent)
        return Ack(
            publish=publish,
            ops=[
                self.register.advance(c.key, stored),
                self.tracker.stage_done(
                    c.command.job_id, c.command.document_id, EMBED.name, job=job
                ),
            ],
        )


# -- the stage ------------------------------------------------------------------------


@asynccontextmanager
async def open_model(settings: Settings, stop: asyncio.Event) -> AsyncIterator[EmbedModel]:
    """Load the model (off the event loop); on the way out, log what it did and close it."""
    embedder = await load_embedder(settings.embed)
    collector = None
    if settings.metrics.metrics:
        from embedstream.metrics.embedder import register_embedder

        collector = register_embedder(embedder)
    try:
        yield EmbedModel(
            embedder, embedder.chunker(settings.embed.chunk_tokens, settings.embed.chunk_overlap)
        )
    finally:
        log.info(
            "embed worker stopped",
            model=embedder.name,
            encode_calls=embedder.stats.calls,
            chunks=embedder.stats.chunks,
            padded_tokens=embedder.stats.padded_tokens,
            encode_s=round(embedder.stats.seconds, 2),
        )
        if collector is not None:
            from prometheus_client import REGISTRY

            REGISTRY.unregister(collector)
        await asyncio.to_thread(embedder.close)


def embed_handler(model: EmbedModel, context: StageContext) -> EmbedHandler:
    return EmbedHandler(
        context.client,
        context.names,
        model.embedder,
        model.chunker,
        context.jobs,
        event_versions=context.events.embedded_event_versions,
    )


def embed_hooks(context: StageContext) -> RuntimeHooks:
    """A dead-lettered command fails its document (at the stage that asked, for a
    re-embed request); every entry is settled in the in-flight count."""
    return RuntimeHooks(
        dead_letter_ops=reembed_aware_dead_letter_ops(context.jobs, EMBED.name),
        settle_ops=InFlight(context.client, context.names).settle_ops,
    )


EMBED_STAGE: Stage[EmbedModel, Command] = Stage(
    names=EMBED,
    payloads=COMMANDS,
    clients=open_model,
    handler=embed_handler,
    checks=lambda model: {},
    hooks=embed_hooks,
)


def build_embed_worker(
    client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    consumer: ConsumerSettings,
    embed: EmbedSettings | None = None,
    *,
    tracker: JobTracker | None = None,
    events: EventSettings | None = None,
) -> StreamWorker[Decoded[Command]]:
    """The embed stage's worker over an open client and a loaded model (what
    ``run_stage`` builds; for tests and benchmarks)."""
    embed = embed or EmbedSettings()
    context = StageContext(client, names, consumer, events or EventSettings(), tracker)
    model = EmbedModel(embedder, embedder.chunker(embed.chunk_tokens, embed.chunk_overlap))
    return EMBED_STAGE.build(model, context)
