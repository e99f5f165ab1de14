"""The embed stage: commands on ``{prefix}:ingest`` become events on ``{prefix}:embedded``.

``document.upsert.v1`` -> ``document.embedded`` (chunks and vectors), ``document.delete.v1``
-> ``document.removed``, each with the command's version (its ingest entry id), and
``document.reembed.v1`` -> ``document.embedded`` at the version it names. Events go out in
the type versions ``EMBEDSTREAM_EMBEDDED_EVENT_VERSIONS`` names (``v1`` and ``v2`` by
default: the same event twice, see ``embedstream.schemas.events``). All chunks of all
upserts in a batch go through one embedder call.

Events carry the command's tenant. Content-hash reuse: ``{prefix}:embed:hashes`` maps a
document key ``{tenant}/{document_id}`` to
``<sha256>|<version>|<chunk_count>|<profile>`` after its last embedding (or
``deleted|<version>|0|`` after a delete); the ack transaction updates it with a Lua
script that never moves a document's entry backwards. An upsert is answered with
``reused=True``, no chunks and ``base_version`` = the stored version, without encoding,
only when all of these hold, read in one atomic snapshot:

- its text, model and chunking are those of the stored embedding, not deleted since;
- the stored embedding is older than the upsert;
- the upsert is the only command of its document in flight on ``{prefix}:ingest``
  (``embedstream.adapters.inflight``): no other replica, and no other batch of this one,
  holds a newer or older command for it, so the stored embedding is the previous
  command's, and that command's event is already on ``{prefix}:embedded``.

A re-embed request is never answered with a reuse. A store that still cannot apply a
reuse asks for a re-embed (``embedstream.workers.reembed``) instead of failing the job.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from pydantic import BaseModel
from redis.asyncio.client import Pipeline

from embedstream.adapters.chunking import Chunk, Chunker
from embedstream.adapters.embedder import Embedder, load_embedder
from embedstream.adapters.inflight import InFlight, InFlightState
from embedstream.adapters.jobs import JobTracker
from embedstream.adapters.redis_client import create_redis
from embedstream.config import ConsumerSettings, EmbedSettings, EventSettings, Settings
from embedstream.errors import PermanentError, PoisonMessage
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
from embedstream.streams.messages import (
    Ack,
    DeadLetter,
    Message,
    Outcome,
    Publish,
    TransactionOp,
)
from embedstream.streams.names import EMBEDDER_GROUP, StreamNames, as_text, stream_id_to_version
from embedstream.streams.runner import RunStats, StreamWorker
from embedstream.workers.health import worker_health
from embedstream.workers.reembed import reembed_aware_dead_letter_ops

STAGE = "embed"
SOURCE = "embedstream.embed"
TOMBSTONE = "deleted"

log = get_logger("embedstream.embed")

# Set a document's entry in the hashes key unless the stored version is the same or newer.
# Versions are compared as decimal strings (they exceed a Lua double's exact range).
# KEYS: hashes key. ARGV: document id, version, new value. Returns 1 when written.
SET_IF_NEWER = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local v = string.match(cur, '^[^|]*|(%d+)')
  if v and (#v > #ARGV[2] or (#v == #ARGV[2] and v >= ARGV[2])) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredEmbedding:
    """A document's entry in the hashes key."""

    content_hash: str
    version: int
    chunk_count: int
    profile: str

    @property
    def deleted(self) -> bool:
        return self.content_hash == TOMBSTONE

    def value(self) -> str:
        return f"{self.content_hash}|{self.version}|{self.chunk_count}|{self.profile}"

    @classmethod
    def parse(cls, raw: bytes | str | None) -> StoredEmbedding | None:
        if raw is None:
            return None
        parts = as_text(raw).split("|", 3)
        if len(parts) != 4:
            return None
        digest, version, count, profile = parts
        try:
            return cls(digest, int(version), int(count), profile)
        except ValueError:
            return None


def _version_of(entry_id: str) -> int:
    """The command's version (its ingest entry id as one integer); an entry id beyond what
    the stores' versions hold (PostgreSQL's bigint) is poison, refused before either
    store could disagree about it."""
    version = stream_id_to_version(entry_id)
    if version > BIGINT_MAX:
        raise PoisonMessage(f"ingest entry id {entry_id} is beyond the versions stores hold")
    return version


@dataclass(frozen=True)
class _Command:
    """A command of this batch, with its position and version."""

    index: int
    message: Message[Envelope]
    command: DocumentUpsert | DocumentDelete | DocumentReembed
    version: int

    @property
    def tenant(self) -> str:
        return self.message.body.tenant

    @property
    def key(self) -> str:
        """The document key ``{tenant}/{document_id}``."""
        return document_key(self.tenant, self.command.document_id)


@dataclass(frozen=True)
class _Upsert(_Command):
    """An upsert, or a re-embed request (never answered with a reuse)."""

    command: DocumentUpsert | DocumentReembed
    content_hash: str

    @property
    def may_reuse(self) -> bool:
        return isinstance(self.command, DocumentUpsert)


@dataclass(frozen=True)
class _Delete(_Command):
    command: DocumentDelete


EMBEDDED_TYPES = {1: DOCUMENT_EMBEDDED, 2: DOCUMENT_EMBEDDED_V2}
REMOVED_TYPES = {1: DOCUMENT_REMOVED, 2: DOCUMENT_REMOVED_V2}


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
        self.client = client
        self.names = names
        self.embedder = embedder
        self.chunker = chunker
        self.tracker = tracker
        self.source = source
        self.event_versions = tuple(event_versions)
        self.hashes_key = names.key("embed", "hashes")
        self.profile = f"{embedder.name}:{embedder.dim}:{chunker.chunk_tokens}:{chunker.overlap}"
        self.in_flight = InFlight(client, names)
        self._set_if_newer = client.register_script(SET_IF_NEWER)

    async def __call__(self, messages: Sequence[Message[Envelope]]) -> list[Outcome]:
        started = time.perf_counter()
        outcomes: list[Outcome | None] = [None] * len(messages)
        upserts: list[_Upsert] = []
        deletes: list[_Delete] = []
        for i, message in enumerate(messages):
            try:
                command = self._parse(message.body)
                if isinstance(command, DocumentReembed):
                    version = parse_version(command.version)  # the model bounds it
                else:
                    version = _version_of(message.id)
            except PoisonMessage as exc:
                outcomes[i] = DeadLetter(exc)
                continue
            if isinstance(command, DocumentDelete):
                deletes.append(_Delete(i, message, command, version))
            else:
                upserts.append(_Upsert(i, message, command, version, content_hash(command.text)))

        for d in deletes:
            outcomes[d.index] = self._removed(d)
        reusable = await self._reusable(upserts)
        for u in upserts:
            stored = reusable.get(u.index)
            if stored is not None:
                outcomes[u.index] = self._embedded(u, None, stored.chunk_count, stored.version)
        fresh = [u for u in upserts if u.index not in reusable]
        chunks, encode_s = await self._embed(fresh)
        for u in fresh:
            doc_chunks = chunks[u.content_hash]
            if doc_chunks:
                outcomes[u.index] = self._embedded(u, doc_chunks, len(doc_chunks), None)
            else:
                outcomes[u.index] = DeadLetter(
                    PermanentError(
                        f"document {u.command.document_id!r} has no text to embed "
                        "(empty or whitespace only)"
                    )
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
        answered = [o for o in outcomes if o is not None]
        if len(answered) != len(messages):  # pragma: no cover - a bug: retry the batch
            raise RuntimeError("embed handler left messages without an outcome")
        return answered

    # -- steps -----------------------------------------------------------------------

    def _parse(self, envelope: Envelope) -> DocumentUpsert | DocumentDelete | DocumentReembed:
        if envelope.type == DOCUMENT_UPSERT:
            return envelope.payload(DocumentUpsert)
        if envelope.type == DOCUMENT_DELETE:
            return envelope.payload(DocumentDelete)
        if envelope.type == DOCUMENT_REEMBED:
            return envelope.payload(DocumentReembed)
        raise PoisonMessage(
            f"unknown command type {envelope.type!r} on the ingest stream "
            f"(expected {DOCUMENT_UPSERT}, {DOCUMENT_DELETE} or {DOCUMENT_REEMBED})"
        )

    async def _reusable(self, upserts: list[_Upsert]) -> dict[int, StoredEmbedding]:
        """Upserts (by message index) whose stored embedding can be reused (see the module
        doc). The stored embeddings and the in-flight counts are read in one MULTI, so
        the answer holds for one moment of the whole deployment."""
        candidates = [u for u in upserts if u.may_reuse]
        if not candidates:
            return {}
        entries = {u.message.id: u.key for u in candidates}
        pipe: Any
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(self.hashes_key, [u.key for u in candidates])
            self.in_flight.queue_read(pipe, entries)
            raw, counts, owners = await pipe.execute()
        states: dict[str, InFlightState] = InFlight.parse(entries, counts, owners)
        found: dict[int, StoredEmbedding] = {}
        for u, value in zip(candidates, raw, strict=True):
            stored = StoredEmbedding.parse(value)
            if (
                stored is not None
                and not stored.deleted
                and stored.content_hash == u.content_hash
                and stored.profile == self.profile
                and stored.chunk_count > 0
                and stored.version < u.version
                and states[u.message.id].alone
            ):
                found[u.index] = stored
        return found

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
        doc = u.command.document_id
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
                    id=chunk_id(u.tenant, doc, c.index), index=c.index, text=c.text, vector=v
                )
                for c, v in chunks or ()
            ],
        )
        publish = [
            self._publish(u.message, EMBEDDED_TYPES[v], event.to_v1() if v == 1 else event, doc)
            for v in self.event_versions
        ]
        stored = StoredEmbedding(u.content_hash, u.version, chunk_count, self.profile)
        return self._ack(publish, event.job_id, doc, u.key, stored)

    def _removed(self, d: _Delete) -> Ack:
        doc = d.command.document_id
        event = DocumentRemovedV2(
            job_id=d.command.job_id, document_id=doc, version=version_text(d.version)
        )
        publish = [
            self._publish(d.message, REMOVED_TYPES[v], event.to_v1() if v == 1 else event, doc)
            for v in self.event_versions
        ]
        stored = StoredEmbedding(TOMBSTONE, d.version, 0, "")
        return self._ack(publish, event.job_id, doc, d.key, stored)

    def _publish(
        self, message: Message[Envelope], event_type: str, payload: BaseModel, document_id: str
    ) -> Publish:
        envelope = Envelope.wrap(
            event_type,
            payload,
            source=self.source,
            tenant=message.body.tenant,
            subject=document_id,
            traceparent=message.body.traceparent,
        )
        return Publish.event(self.names.embedded, envelope)

    def _ack(
        self,
        publish: list[Publish],
        job_id: str,
        document_id: str,
        key: str,
        stored: StoredEmbedding,
    ) -> Ack:
        return Ack(
            publish=publish,
            ops=[
                self._store_op(key, stored),
                self.tracker.stage_done(job_id, document_id, STAGE),
            ],
        )

    def _store_op(self, key: str, stored: StoredEmbedding) -> TransactionOp:
        """Advance the document key's entry in the hashes key (never backwards)."""
        keys = [self.hashes_key]
        args = [key, str(stored.version), stored.value()]

        def op(pipe: Pipeline) -> Any:
            return self._set_if_newer(keys=keys, args=args, client=pipe)

        return op


# -- assembly ------------------------------------------------------------------------


def build_embed_worker(
    client: redis.Redis,
    names: StreamNames,
    embedder: Embedder,
    consumer: ConsumerSettings,
    embed: EmbedSettings | None = None,
    *,
    tracker: JobTracker | None = None,
    events: EventSettings | None = None,
) -> StreamWorker[Envelope]:
    """The embed worker on ``names.ingest`` in group ``embedder``."""
    embed = embed or EmbedSettings()
    events = events or EventSettings()
    tracker = tracker or JobTracker(
        client, names, source=SOURCE, results_versions=events.results_event_versions
    )
    chunker = embedder.chunker(embed.chunk_tokens, embed.chunk_overlap)
    handler = EmbedHandler(
        client,
        names,
        embedder,
        chunker,
        tracker,
        event_versions=events.embedded_event_versions,
    )
    return StreamWorker(
        client,
        names,
        names.ingest,
        EMBEDDER_GROUP,
        handler,
        consumer,
        stage=STAGE,
        dead_letter_ops=reembed_aware_dead_letter_ops(tracker, STAGE),
        settle_ops=handler.in_flight.settle_ops,
    )


async def run(settings: Settings, stop: asyncio.Event, *, burst: bool = False) -> RunStats:
    """Run the embed worker until ``stop`` is set (or, in burst mode, until idle)."""
    client = create_redis(settings.redis)
    embedder: Embedder | None = None
    try:
        async with worker_health(settings.health, STAGE, stop) as health:
            embedder = await load_embedder(settings.embed)
            worker = build_embed_worker(
                client,
                settings.redis.names,
                embedder,
                settings.consumer,
                settings.embed,
                events=settings.events,
            )
            health.watch(worker.heartbeat, {"redis": client.ping})
            stats = await worker.run(stop, burst=burst)
        log.info(
            "embed worker stopped",
            model=embedder.name,
            encode_calls=embedder.stats.calls,
            chunks=embedder.stats.chunks,
            padded_tokens=embedder.stats.padded_tokens,
            encode_s=round(embedder.stats.seconds, 2),
        )
        return stats
    finally:
        if embedder is not None:
            await asyncio.to_thread(embedder.close)
        await client.aclose()
