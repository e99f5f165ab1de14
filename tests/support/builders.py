"""Builders of what the pipeline's tests feed it: jobs and their commands, the embed
stage's events, envelopes on a stream, and the bookkeeping ops a worker's ack runs.

One place for them, so that every test builds a job, an event or an ack the way the
pipeline does (a job through ``JobTracker.submit``, an event through its model, an ack's
ops in one MULTI/EXEC)."""

from __future__ import annotations

import hashlib
import inspect
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import redis.asyncio as redis
from pydantic import BaseModel

from embedstream.adapters.postgres.model import ChunkRow, DocumentWrite
from embedstream.contracts.catalog import message_for_model
from embedstream.jobs.tracker import JobTracker, Submission
from embedstream.schemas.commands import DocumentDelete, DocumentUpsert, MetadataValue
from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import (
    DocumentEmbedded,
    DocumentEmbeddedV2,
    DocumentRemoved,
    EmbeddedChunk,
)
from embedstream.schemas.tenancy import chunk_id
from embedstream.schemas.vectors import Vector, encode_vector
from embedstream.schemas.versions import version_text
from embedstream.streams.messages import TransactionOp

TENANT = "acme"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
MODEL, DIM = "test-model", 8

Kind = Literal["upsert", "delete"]

# -- jobs and commands ------------------------------------------------------------------


def command_envelope(
    job_id: str,
    document_id: str,
    kind: Kind = "upsert",
    *,
    text: str = "some text",
    metadata: Mapping[str, MetadataValue] | None = None,
    tenant: str = TENANT,
    traceparent: str | None = None,
) -> Envelope:
    """The command the ingress would put on the ingest stream for one document."""
    command: DocumentUpsert | DocumentDelete = (
        DocumentUpsert(
            job_id=job_id, document_id=document_id, text=text, metadata=dict(metadata or {})
        )
        if kind == "upsert"
        else DocumentDelete(job_id=job_id, document_id=document_id)
    )
    return Envelope.wrap(
        f"document.{kind}.v1",
        command,
        source="tests",
        tenant=tenant,
        subject=document_id,
        traceparent=traceparent,
    )


async def submit_job(
    tracker: JobTracker,
    documents: Mapping[str, Kind] | Iterable[tuple[str, Kind]],
    *,
    job_id: str | None = None,
    tenant: str = TENANT,
    text: str = "some text",
    traceparent: str | None = None,
) -> str:
    """A job with one command per (document id, kind), submitted as the ingress does;
    returns its id."""
    job_id = job_id or uuid.uuid4().hex
    items = documents.items() if isinstance(documents, Mapping) else documents
    submissions = [
        Submission(
            document_id,
            kind,
            command_envelope(
                job_id, document_id, kind, text=text, tenant=tenant, traceparent=traceparent
            ),
        )
        for document_id, kind in items
    ]
    await tracker.submit(job_id, submissions, tenant=tenant, traceparent=traceparent)
    return job_id


async def apply_ops(client: redis.Redis, ops: Iterable[TransactionOp]) -> None:
    """Run ops in one MULTI/EXEC, as a worker's ack does."""
    pipe: Any
    async with client.pipeline(transaction=True) as pipe:
        for op in ops:
            queued = op(pipe)
            if inspect.iscoroutine(queued):
                await queued
        await pipe.execute()


# -- the persist stage's rows ------------------------------------------------------------

ROW_DIM = 4


def row_vector(seed: int, dim: int = ROW_DIM) -> bytes:
    return np.random.default_rng(seed).standard_normal(dim).astype("<f4").tobytes()


def row_upsert(
    doc: str,
    version: int,
    chunks: int = 2,
    *,
    text: str = "hello",
    job: str = "j",
    reused: bool = False,
    meta: str = "{}",
    tenant: str = TENANT,
    base_version: int | None = None,
) -> DocumentWrite:
    """An upsert as the persist stage writes it (chunk vectors seeded by version)."""
    return DocumentWrite(
        job_id=job,
        document_id=doc,
        version=version,
        tenant=tenant,
        reused=reused,
        base_version=base_version,
        content_hash=f"h:{text}",
        text=text,
        metadata_json=meta,
        model="m",
        dim=ROW_DIM,
        chunk_count=chunks,
        chunks=()
        if reused
        else tuple(
            ChunkRow(i, chunk_id(tenant, doc, i), f"{text} {i}", row_vector(version * 100 + i))
            for i in range(chunks)
        ),
    )


def row_delete(doc: str, version: int, *, job: str = "j", tenant: str = TENANT) -> DocumentWrite:
    return DocumentWrite(job_id=job, document_id=doc, version=version, tenant=tenant, deleted=True)


# -- the embed stage's events -----------------------------------------------------------

_rng = np.random.default_rng(7)


def unit_vector(dim: int = DIM) -> Vector:
    vector = _rng.standard_normal(dim).astype(np.float32)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def content_hash_of(texts: Sequence[str]) -> str:
    return hashlib.sha256("|".join(texts).encode()).hexdigest()


def embedded_event(
    job_id: str,
    document_id: str,
    version: int,
    texts: Sequence[str] = ("alpha", "beta"),
    *,
    tenant: str = TENANT,
    metadata: Mapping[str, MetadataValue] | None = None,
    model: str = MODEL,
    dim: int = DIM,
    vectors: Sequence[Any] | None = None,
    reused: bool = False,
    content_hash: str | None = None,
) -> DocumentEmbedded:
    """``document.embedded.v1`` of ``texts`` (one chunk each, unit vectors unless given);
    a reused one carries no chunks."""
    vectors = vectors if vectors is not None else [unit_vector(dim) for _ in texts]
    chunks = [
        EmbeddedChunk(
            id=chunk_id(tenant, document_id, n), index=n, text=text, vector=encode_vector(vec)
        )
        for n, (text, vec) in enumerate(zip(texts, vectors, strict=True))
    ]
    return DocumentEmbedded(
        job_id=job_id,
        document_id=document_id,
        version=version,
        content_hash=content_hash or content_hash_of(texts),
        model=model,
        dim=dim,
        text=" ".join(texts),
        metadata=dict(metadata or {}),
        chunk_count=len(texts),
        reused=reused,
        chunks=[] if reused else chunks,
    )


def embedded_v2(
    job_id: str,
    document_id: str,
    version: int,
    texts: Sequence[str] = ("alpha", "beta"),
    *,
    base_version: int | None = None,
    **options: Any,
) -> DocumentEmbeddedV2:
    """``embedded_event`` as ``document.embedded.v2`` (naming the reuse's base)."""
    event = DocumentEmbeddedV2.from_v1(
        embedded_event(job_id, document_id, version, texts, **options)
    )
    if base_version is None:
        return event
    return event.model_copy(update={"base_version": version_text(base_version)})


def removed_event(job_id: str, document_id: str, version: int) -> DocumentRemoved:
    return DocumentRemoved(job_id=job_id, document_id=document_id, version=version)


def event_envelope(
    event: BaseModel, *, tenant: str = TENANT, traceparent: str | None = None
) -> Envelope:
    """``event`` in an envelope of its type (from the contracts' catalog)."""
    return Envelope.wrap(
        message_for_model(type(event)).type,
        event,
        source="tests",
        tenant=tenant,
        subject=getattr(event, "document_id", None),
        traceparent=traceparent,
    )


async def publish(
    client: redis.Redis,
    stream: str,
    *events: BaseModel,
    tenant: str = TENANT,
    traceparent: str | None = None,
) -> list[str]:
    """Add each event to ``stream`` in an envelope of its type; returns the entry ids."""
    ids: list[str] = []
    for event in events:
        envelope = event_envelope(event, tenant=tenant, traceparent=traceparent)
        entry_id = await client.xadd(stream, envelope.to_fields())  # type: ignore[arg-type]
        ids.append(entry_id.decode())
    return ids
