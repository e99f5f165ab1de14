"""Job records in Redis: accepting a request, per-document stage bookkeeping and the
one ``job.completed`` / ``job.failed`` event per job.

A job holds one or more documents. A document is finished when every required stage
(index and persist) has recorded it done, or when any stage recorded it failed (for
example because its message was dead-lettered). The stage marks are Lua scripts that
workers run in the MULTI/EXEC of their ack, so bookkeeping and ack land together and a
redelivered message is counted once.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from embedstream.adapters import job_scripts
from embedstream.adapters.inflight import InFlight
from embedstream.errors import public_error
from embedstream.logging import get_logger
from embedstream.schemas.envelope import Envelope, Fields
from embedstream.schemas.events import (
    DOCUMENT_DELETED,
    DOCUMENT_DELETED_V2,
    DocumentDeleted,
    DocumentDeletedV2,
)
from embedstream.schemas.versions import version_text
from embedstream.streams.messages import DeadLetterOps, TransactionOp
from embedstream.streams.names import StreamNames, stream_id_to_version

log = get_logger(__name__)

STAGES = ("embed", "index", "persist")
REQUIRED_STAGES = ("index", "persist")
DEFAULT_TTL_S = 7 * 24 * 3600
DELETED_TYPES = {1: DOCUMENT_DELETED, 2: DOCUMENT_DELETED_V2}
#: What may name a job in a Redis key: the ingress's UUIDs and the plain ids tools and
#: tests use. Never ':' (``{job}:docs``, ``{job}:state``... are the job's other keys, so
#: ``<id>:state`` would read another key as a job) and never braces (cluster hash tags).
JOB_ID_SYNTAX = re.compile(r"[A-Za-z0-9_-]{1,128}")
_JOB_FIELDS = (b"id", b"state", b"documents", b"done", b"failed", b"created_at")


def valid_job_id(job_id: object) -> bool:
    return isinstance(job_id, str) and JOB_ID_SYNTAX.fullmatch(job_id) is not None


class InvalidJobId(ValueError):
    """A string that cannot name a job (see ``JOB_ID_SYNTAX``)."""


class IdempotencyConflict(Exception):
    """An idempotency key was reused with a different request body."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"this Idempotency-Key was already used for job {job_id} with a different "
            "request body; use a new key for a new request"
        )
        self.job_id = job_id


@dataclass(frozen=True)
class Submission:
    """One command of a job, ready to be added to the ingest stream."""

    document_id: str
    kind: str  # "upsert" | "delete"
    envelope: Envelope


@dataclass(frozen=True)
class Submitted:
    job_id: str
    created: bool


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


class JobTracker:
    """Creates jobs and hands workers the bookkeeping ops for their acks."""

    def __init__(
        self,
        client: redis.Redis,
        names: StreamNames,
        *,
        source: str = "embedstream",
        ttl_s: int = DEFAULT_TTL_S,
        results_versions: Sequence[int] = (1, 2),
    ) -> None:
        """``results_versions``: the type versions of ``document.deleted`` to emit
        (``EventSettings.results_event_versions``)."""
        self.client = client
        self.names = names
        self.source = source
        self.ttl_s = ttl_s
        self.results_versions = tuple(results_versions)
        self._submit = client.register_script(job_scripts.SUBMIT)
        self._mark = client.register_script(job_scripts.MARK_STAGE)
        self._in_flight_keys = InFlight(client, names).keys

    # -- keys ------------------------------------------------------------------------

    def job_key(self, job_id: str) -> str:
        """``{prefix}:job:{job_id}``; ``InvalidJobId`` unless ``job_id`` fits
        ``JOB_ID_SYNTAX``: no key is built from anything else."""
        if not valid_job_id(job_id):
            raise InvalidJobId("not a job id: 1-128 letters, digits, '_' or '-'")
        return self.names.key("job", job_id)

    def idempotency_key(self, tenant: str, key: str) -> str:
        """``{prefix}:idem:{tenant}:{key}``: tenants cannot contain ':', so two tenants'
        keys never collide."""
        return self.names.key("idem", tenant, key)

    def _keys(self, job_id: str, stage: str) -> list[str]:
        job = self.job_key(job_id)
        return [
            job,
            f"{job}:docs",
            f"{job}:stage:{stage}",
            f"{job}:state",
            f"{job}:failures",
            self.names.results,
            *(f"{job}:stage:{s}" for s in REQUIRED_STAGES),
        ]

    # -- accepting -------------------------------------------------------------------

    async def submit(
        self,
        job_id: str,
        submissions: Sequence[Submission],
        *,
        tenant: str,
        idempotency_key: str | None = None,
        body_hash: str = "",
    ) -> Submitted:
        """Atomically: idempotency record, job record (owned by ``tenant``), and one XADD
        per command. Idempotency keys are scoped per tenant."""
        idem_key = self.idempotency_key(tenant, idempotency_key) if idempotency_key else ""
        args: list[Any] = [
            job_id,
            body_hash,
            datetime.now(UTC).isoformat(),
            self.ttl_s,
            tenant,
            len(submissions),
        ]
        for sub in submissions:
            fields = sub.envelope.to_fields()
            args.extend((sub.document_id, sub.kind, len(fields)))
            for key, value in fields.items():
                args.extend((key, value))
        job = self.job_key(job_id)
        reply: list[bytes] = await self._submit(
            keys=[idem_key, job, f"{job}:docs", self.names.ingest, *self._in_flight_keys],
            args=args,
        )
        existing_id, outcome = reply[0].decode(), reply[1].decode()
        if outcome == "conflict":
            raise IdempotencyConflict(existing_id)
        return Submitted(existing_id, created=outcome == "new")

    # -- worker bookkeeping ----------------------------------------------------------

    def stage_done(
        self,
        job_id: str,
        document_id: str,
        stage: str,
        *,
        deleted_version: int | None = None,
    ) -> TransactionOp:
        """The op recording ``stage`` done for a document; pass ``deleted_version`` for a
        delete so ``document.deleted`` (each type version in ``results_versions``) is
        emitted once the document is finished."""
        deleted: list[str] = []
        if deleted_version is not None:
            for version in self.results_versions:
                event: DocumentDeleted | DocumentDeletedV2
                if version == 1:
                    event = DocumentDeleted(
                        job_id=job_id, document_id=document_id, version=deleted_version
                    )
                else:
                    event = DocumentDeletedV2(
                        job_id=job_id,
                        document_id=document_id,
                        version=version_text(deleted_version),
                    )
                deleted += [str(uuid.uuid4()), DELETED_TYPES[version], event.model_dump_json()]
        return self._mark_op(job_id, document_id, stage, "done", "", deleted)

    def stage_failed(self, job_id: str, document_id: str, stage: str, error: str) -> TransactionOp:
        """The op recording a document failed at ``stage`` (after a dead letter); ``error``
        is what clients read (``public_error``), never an internal message."""
        return self._mark_op(job_id, document_id, stage, "failed", error[:1000], [])

    def _mark_op(
        self,
        job_id: str,
        document_id: str,
        stage: str,
        status: str,
        error: str,
        deleted: list[str],
    ) -> TransactionOp:
        if not valid_job_id(job_id):
            # a message made outside the ingress: it has no job record to keep
            log.warning("no job bookkeeping for a message without a valid job id", stage=stage)
            return _no_op
        keys = self._keys(job_id, stage)
        args: list[str | int] = [
            document_id,
            status,
            error,
            stage,
            datetime.now(UTC).isoformat(),
            str(uuid.uuid4()),
            self.source,
            self.ttl_s,
            *deleted,
        ]

        def op(pipe: Pipeline) -> Any:
            return self._mark(keys=keys, args=args, client=pipe)

        return op

    def dead_letter_ops(self, stage: str) -> DeadLetterOps:
        """For ``StreamWorker(dead_letter_ops=...)``: a dead-lettered entry marks its
        document failed at ``stage`` when its payload names a job and a document."""

        def ops(fields: Fields, error: BaseException) -> Sequence[TransactionOp]:
            ref = job_reference(fields)
            if ref is None:
                return ()
            job_id, document_id = ref
            # the job record and job.failed carry a stable code and a short message; the
            # full error stays in the dead letter and the worker's log
            return (self.stage_failed(job_id, document_id, stage, public_error(error)),)

        return ops

    # -- reading ---------------------------------------------------------------------

    async def status(self, job_id: str, *, tenant: str | None = None) -> JobStatus | None:
        """The job's status; None when it is unknown, expired, not a job id or (with
        ``tenant``) owned by another tenant: callers cannot tell those apart."""
        if not valid_job_id(job_id):
            return None
        job = self.job_key(job_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(job)
            pipe.hgetall(f"{job}:docs")
            pipe.hgetall(f"{job}:state")
            pipe.hgetall(f"{job}:failures")
            for stage in STAGES:
                pipe.hgetall(f"{job}:stage:{stage}")
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
        )


def _no_op(pipe: Pipeline) -> None:
    return None


def job_reference(fields: Fields) -> tuple[str, str] | None:
    """(job_id, document_id) from an entry's payload, or None if it has none."""
    data = fields.get(b"data")
    if not data:
        return None
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    job_id, document_id = payload.get("job_id"), payload.get("document_id")
    if isinstance(job_id, str) and isinstance(document_id, str):
        return job_id, document_id
    return None
