"""Every stream, who writes it, who reads it, and the message types it carries.

The stream names come from ``embedstream.streams.names``; the payload models from
``embedstream.schemas``. Pact participant names (``producer`` / ``Consumer.name``) are
the names the message pacts under ``schemas/pacts/`` use.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass

from pydantic import BaseModel

from embedstream.schemas import commands, events
from embedstream.streams.names import EMBED, INDEX, PERSIST

PREFIX_PLACEHOLDER = "{prefix}"

INGRESS = "embedstream-ingress"
EMBED_WORKER = "embedstream-embed-worker"
INDEX_WORKER = "embedstream-index-worker"
PERSIST_WORKER = "embedstream-persist-worker"
RESULTS = "embedstream-results"
REEMBED = "embedstream-reembed"
SAMPLE_SUBSCRIBER = "sample-subscriber"


@dataclass(frozen=True)
class Consumer:
    """A reader of a stream: a name, its consumer group (``None``: one per downstream
    service), what it does, and the consumer name of its pact (if it has one)."""

    name: str
    group: str | None
    summary: str
    pact: str | None = None


@dataclass(frozen=True)
class Channel:
    """One stream. ``key`` is the part after the prefix: ``{prefix}:{key}``."""

    key: str
    summary: str
    producer: str
    producer_summary: str
    consumers: tuple[Consumer, ...]

    @property
    def address(self) -> str:
        return f"{PREFIX_PLACEHOLDER}:{self.key}"


@dataclass(frozen=True)
class MessageType:
    """A versioned message type: the envelope's ``type`` and its payload model.
    ``producer``: who writes it, when that is not the channel's producer."""

    type: str
    model: builtins.type[BaseModel]
    channel: str
    summary: str
    subject: str
    producer: str | None = None


@dataclass(frozen=True)
class Producer:
    """A writer of a stream (a pact provider) and what it does there."""

    name: str
    summary: str


DOWNSTREAM = Consumer(
    "downstream",
    None,
    "downstream services (embedstream.subscribe), each in a consumer group of its own",
    pact=SAMPLE_SUBSCRIBER,
)

CHANNELS: tuple[Channel, ...] = (
    Channel(
        key="ingest",
        summary="Commands accepted by the HTTP ingress, one entry per document.",
        producer=INGRESS,
        producer_summary="the HTTP ingress (one Lua call: job record + XADD per command)",
        consumers=(
            Consumer(EMBED_WORKER, EMBED.group, "chunks and embeds documents", EMBED_WORKER),
        ),
    ),
    Channel(
        key="embedded",
        summary="Documents chunked and embedded (vectors as base64 float32), and deletes "
        "forwarded with their version.",
        producer=EMBED_WORKER,
        producer_summary="the embed worker (XADD in the MULTI/EXEC of its ack)",
        consumers=(
            Consumer(INDEX_WORKER, INDEX.group, "writes vectors to Chroma", INDEX_WORKER),
            Consumer(
                PERSIST_WORKER, PERSIST.group, "writes documents to PostgreSQL", PERSIST_WORKER
            ),
            Consumer(
                "downstream",
                None,
                "downstream services that want the vectors, each in a group of its own",
            ),
        ),
    ),
    Channel(
        key="results",
        summary="Job and document lifecycle events for downstream services.",
        producer=RESULTS,
        producer_summary="job bookkeeping: the MARK_STAGE Lua script the index and persist "
        "workers run in their ack's MULTI/EXEC",
        consumers=(DOWNSTREAM,),
    ),
)

OTHER_PRODUCERS: tuple[Producer, ...] = (
    Producer(
        REEMBED,
        "re-embed requests: the index and persist workers, in the MULTI/EXEC of their ack, "
        "when they cannot apply a reused embedding",
    ),
)
"""Producers of single message types on a channel whose main producer is another."""

_VERSION_NOTE = (
    " The version is a JSON integer beyond 2**53 (readers that parse numbers as doubles "
    "round it): read {v2} instead."
)

MESSAGES: tuple[MessageType, ...] = (
    MessageType(
        commands.DOCUMENT_UPSERT,
        commands.DocumentUpsert,
        "ingest",
        "Create or replace a document; its version is the ingest stream entry id.",
        "the document id",
    ),
    MessageType(
        commands.DOCUMENT_DELETE,
        commands.DocumentDelete,
        "ingest",
        "Remove a document and all of its chunks.",
        "the document id",
    ),
    MessageType(
        commands.DOCUMENT_REEMBED,
        commands.DocumentReembed,
        "ingest",
        "Embed a document again at a given version, never reusing stored chunks: asked by "
        "the index or persist stage when it cannot apply a reused embedding.",
        "the document id",
        producer=REEMBED,
    ),
    MessageType(
        events.DOCUMENT_EMBEDDED,
        events.DocumentEmbedded,
        "embedded",
        "A document's chunks and vectors (or, with reused=true, none: the stored ones "
        "stay), with its version." + _VERSION_NOTE.format(v2=events.DOCUMENT_EMBEDDED_V2),
        "the document id",
    ),
    MessageType(
        events.DOCUMENT_REMOVED,
        events.DocumentRemoved,
        "embedded",
        "A delete command forwarded, with its version, to the index and persist workers."
        + _VERSION_NOTE.format(v2=events.DOCUMENT_REMOVED_V2),
        "the document id",
    ),
    MessageType(
        events.DOCUMENT_EMBEDDED_V2,
        events.DocumentEmbeddedV2,
        "embedded",
        "A document's chunks and vectors (or, with reused=true, none: the stored ones "
        "stay, and base_version names the version they come from), with its version as "
        "exact version text (20 digits; string order is version order).",
        "the document id",
    ),
    MessageType(
        events.DOCUMENT_REMOVED_V2,
        events.DocumentRemovedV2,
        "embedded",
        "A delete command forwarded to the index and persist workers, with its version as "
        "exact version text.",
        "the document id",
    ),
    MessageType(
        events.JOB_COMPLETED,
        events.JobCompleted,
        "results",
        "Every document of a job finished without failure (emitted once per job).",
        "the job id",
    ),
    MessageType(
        events.JOB_FAILED,
        events.JobFailed,
        "results",
        "Every document of a job finished and at least one failed (emitted once per job).",
        "the job id",
    ),
    MessageType(
        events.DOCUMENT_DELETED,
        events.DocumentDeleted,
        "results",
        "A delete took effect in every store."
        + _VERSION_NOTE.format(v2=events.DOCUMENT_DELETED_V2),
        "the document id",
    ),
    MessageType(
        events.DOCUMENT_DELETED_V2,
        events.DocumentDeletedV2,
        "results",
        "A delete took effect in every store; its version as exact version text.",
        "the document id",
    ),
)

_BY_TYPE = {m.type: m for m in MESSAGES}
_BY_MODEL = {m.model: m for m in MESSAGES}


def message_type(name: str) -> MessageType:
    """The catalog entry of a type name; ``KeyError`` for an unknown one."""
    try:
        return _BY_TYPE[name]
    except KeyError:
        raise KeyError(f"unknown message type {name!r}; known: {', '.join(_BY_TYPE)}") from None


def message_for_model(model: type[BaseModel]) -> MessageType:
    """The catalog entry whose payload model is ``model``; ``KeyError`` when none."""
    try:
        return _BY_MODEL[model]
    except KeyError:
        raise KeyError(f"{model.__name__} is not the payload model of any message type") from None


def producer_of(message: MessageType) -> str:
    """The pact provider that writes ``message``."""
    return message.producer or channel(message.channel).producer


def channel(key: str) -> Channel:
    for item in CHANNELS:
        if item.key == key:
            return item
    raise KeyError(f"unknown channel {key!r}")


def messages_on(key: str) -> tuple[MessageType, ...]:
    return tuple(m for m in MESSAGES if m.channel == key)
