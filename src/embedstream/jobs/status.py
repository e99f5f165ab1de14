"""Reading a job: its state and, per document, its state and each stage's mark."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import redis.asyncio as redis

from embedstream.jobs.keys import STAGES, JobKeys
from embedstream.streams.names import stream_id_to_version

_JOB_FIELDS = (b"id", b"state", b"documents", b"done", b"failed", b"created_at")


@dataclass
class DocumentStatus:
    document_id: str
    kind: str
    version: str
    state: str  # "pending" | "done" | "failed"
    stages: dict[str, str] = field(default_factory=dict)
    error: dict[str, str] | None = None


@dataclass
class JobStatus:
    job_id: str
    tenant: str
    state: str  # "queued" | "completed" | "failed"
    documents: int
    done: int
    failed: int
    created_at: str
    finished_at: str | None
    items: list[DocumentStatus]
    traceparent: str | None = None
    """the trace context of the request that made the job (W3C ``traceparent``)"""


async def read_status(
    client: redis.Redis, keys: JobKeys, *, tenant: str | None = None
) -> JobStatus | None:
    """The job's status; None when it is unknown, expired or (with ``tenant``) owned by
    another tenant: callers cannot tell those apart."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.record)
        pipe.hgetall(keys.documents)
        pipe.hgetall(keys.states)
        pipe.hgetall(keys.failures)
        for stage in STAGES:
            pipe.hgetall(keys.stage(stage))
        replies: list[dict[bytes, bytes]] = await pipe.execute()
    record, docs, states, failures = replies[:4]
    if not all(name in record for name in _JOB_FIELDS):
        return None  # nothing there, or a hash that is not a job record
    if tenant is not None and record.get(b"tenant") != tenant.encode():
        return None
    stage_maps = dict(zip(STAGES, replies[4:], strict=True))
    items: list[DocumentStatus] = []
    for raw_doc, raw_ref in docs.items():
        kind, _, version = raw_ref.decode().partition("|")
        failure = failures.get(raw_doc)
        items.append(
            DocumentStatus(
                document_id=raw_doc.decode(),
                kind=kind,
                version=version,
                state=states.get(raw_doc, b"pending").decode(),
                stages={
                    stage: marks[raw_doc].decode()
                    for stage, marks in stage_maps.items()
                    if raw_doc in marks
                },
                error=json.loads(failure) if failure else None,
            )
        )
    items.sort(key=lambda d: stream_id_to_version(d.version))
    text = {k.decode(): v.decode() for k, v in record.items()}
    return JobStatus(
        job_id=text["id"],
        tenant=text.get("tenant", ""),
        state=text["state"],
        documents=int(text["documents"]),
        done=int(text["done"]),
        failed=int(text["failed"]),
        created_at=text["created_at"],
        finished_at=text.get("finished_at"),
        items=items,
        traceparent=text.get("traceparent"),
    )
