"""Job records in Redis: accepting a request, per-document stage bookkeeping and the
one ``job.completed`` / ``job.failed`` event per job.

A job holds one or more documents. A document is finished when every required stage
(index and persist) has recorded it done, or when any stage recorded it failed (for
example because its message was dead-lettered). The stage marks are Lua scripts
(``embedstream.jobs.scripts``) that workers run in the MULTI/EXEC of their ack, so
bookkeeping, ack and result land together and a redelivered message is counted once;
where a job completes, the mark that finishes its last document adds its one
``job.completed`` / ``job.failed`` (``embedstream.jobs.results``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as redis
from pydantic import BaseModel
from redis.asyncio.client import Pipeline

from embedstream.adapters.redis_client import NO_REPLICA_ACK, ReplicaAck, queue_script
from embedstream.errors import public_error
from embedstream.jobs import scripts
from embedstream.jobs.inflight import InFlight
from embedstream.jobs.keys import REQUIRED_STAGES, JobKeys, valid_job_id
from embedstream.jobs.results import JobContext, ResultEnvelopes, deleted_payloads
from embedstream.jobs.status import JobStatus, read_status
from embedstream.logging import get_logger
from embedstream.schemas.envelope import Envelope, Fields
from embedstream.streams.messages import DeadLetterOps, TransactionOp
from embedstream.streams.names import StreamNames, as_text

log = get_logger(__name__)

DEFAULT_TTL_S = 7 * 24 * 3600


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


class JobTracker:
    """Creates jobs, reads them, and hands workers the bookkeeping ops for their acks."""

    def __init__(
        self,
        client: redis.Redis,
        names: StreamNames,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        results_versions: Sequence[int] = (1, 2),
        replica_ack: ReplicaAck = NO_REPLICA_ACK,
    ) -> None:
        """``results_versions``: the type versions of ``document.deleted`` to emit
        (``EventSettings.results_event_versions``). ``replica_ack``: what ``submit`` waits
        for before it returns (``EMBEDSTREAM_REDIS_MIN_REPLICAS_ACK``)."""
        self.client = client
        self.names = names
        self.ttl_s = ttl_s
        self.results_versions = tuple(results_versions)
        self.replica_ack = replica_ack
        self.results = ResultEnvelopes()
        self._submit = client.register_script(scripts.SUBMIT)
        self._mark = client.register_script(scripts.MARK_STAGE)
        self._in_flight_keys = InFlight(client, names).keys

    # -- keys ------------------------------------------------------------------------

    def job_key(self, job_id: str) -> str:
        """``{prefix}:job:{job_id}`` (``InvalidJobId`` for anything that is no job id)."""
        return JobKeys.of(self.names, job_id).record

    def idempotency_key(self, tenant: str, key: str) -> str:
        """``{prefix}:idem:{tenant}:{key}``: tenants cannot contain ':', so two tenants'
        keys never collide."""
        return self.names.key("idem", tenant, key)

    # -- accepting -------------------------------------------------------------------

    async def submit(
        self,
        job_id: str,
        submissions: Sequence[Submission],
        *,
        tenant: str,
        idempotency_key: str | None = None,
        body_hash: str = "",
        traceparent: str | None = None,
    ) -> Submitted:
        """Atomically: idempotency record, job record (owned by ``tenant``, with the
        request's ``traceparent``), and one XADD per command. Idempotency keys are scoped
        per tenant."""
        args: list[Any] = [
            job_id,
            body_hash,
            datetime.now(UTC).isoformat(),
            self.ttl_s,
            tenant,
            traceparent or "",
            len(submissions),
        ]
        for sub in submissions:
            fields = sub.envelope.to_fields()
            args.extend((sub.document_id, sub.kind, len(fields)))
            for key, value in fields.items():
                args.extend((key, value))
        keys = JobKeys.of(self.names, job_id)
        idem_key = self.idempotency_key(tenant, idempotency_key) if idempotency_key else keys.record
        reply: list[bytes] = await self._submit(
            keys=[idem_key, keys.record, keys.documents, self.names.ingest, *self._in_flight_keys],
            args=args,
        )
        existing_id, outcome = reply[0].decode(), reply[1].decode()
        if outcome == "conflict":
            raise IdempotencyConflict(existing_id)
        # a replayed key waits too: the first answer may have been a 503 from this WAIT
        await self.replica_ack.wait(self.client, self.names.ingest)
        return Submitted(existing_id, created=outcome == "new")

    # -- worker bookkeeping ----------------------------------------------------------

    def stage_done(
        self,
        job_id: str,
        document_id: str,
        stage: str,
        *,
        job: JobContext | None = None,
        deleted_version: int | None = None,
    ) -> TransactionOp:
        """The op recording ``stage`` done for a document; pass ``deleted_version`` for a
        delete so ``document.deleted`` (each type version in ``results_versions``) is
        emitted once the document is finished. ``job``: the job's tenant and trace
        context as the acked message carries them (read from the job record when not
        given); a message of another tenant than the job's is not counted."""
        deleted: list[tuple[str, BaseModel]] = []
        if deleted_version is not None:
            deleted = deleted_payloads(job_id, document_id, deleted_version, self.results_versions)
        return self._mark_op(job_id, document_id, stage, "done", "", deleted, job)

    def stage_failed(
        self,
        job_id: str,
        document_id: str,
        stage: str,
        error: str,
        *,
        job: JobContext | None = None,
    ) -> TransactionOp:
        """The op recording a document failed at ``stage`` (after a dead letter); ``error``
        is what clients read (``public_error``), never an internal message."""
        return self._mark_op(job_id, document_id, stage, "failed", error[:1000], [], job)

    def dead_letter_ops(self, stage: str) -> DeadLetterOps:
        """For ``StreamWorker(dead_letter_ops=...)``: a dead-lettered entry marks its
        document failed at ``stage`` when its payload names a job and a document. The
        entry may be undecodable, so the job's tenant and trace context are read from
        its record."""

        def ops(fields: Fields, error: BaseException) -> Sequence[TransactionOp]:
            ref = job_reference(fields)
            if ref is None:
                return ()
            job_id, document_id = ref
            # the job record and job.failed carry a stable code and a short message; the
            # full error stays in the dead letter and the worker's log
            return (self.stage_failed(job_id, document_id, stage, public_error(error)),)

        return ops

    def _mark_op(
        self,
        job_id: str,
        document_id: str,
        stage: str,
        status: str,
        error: str,
        deleted: Sequence[tuple[str, BaseModel]],
        job: JobContext | None,
    ) -> TransactionOp:
        if not valid_job_id(job_id):
            # a message made outside the ingress: it has no job record to keep
            log.warning("no job bookkeeping for a message without a valid job id", stage=stage)
            return _no_op
        keys = JobKeys.of(self.names, job_id)
        script_keys = [
            keys.record,
            keys.documents,
            keys.stage(stage),
            keys.states,
            keys.failures,
            self.names.results,
            *(keys.stage(s) for s in REQUIRED_STAGES),
        ]
        now = datetime.now(UTC)

        def args(context: JobContext) -> list[str | int]:
            completed, failed = self.results.job_attributes(job_id, context, now)
            return [
                document_id,
                status,
                error,
                stage,
                now.isoformat(),
                self.ttl_s,
                context.tenant,
                completed,
                failed,
                *self.results.deleted(document_id, deleted, context, now),
            ]

        if job is not None:
            known = args(job)

            def op(pipe: Pipeline) -> Any:
                return queue_script(self._mark, script_keys, known, pipe)

            return op

        async def op_reading_the_record(pipe: Pipeline) -> None:
            context = await self._job_context(keys)
            if context is not None:  # an unknown or expired job: nothing to mark
                queued = queue_script(self._mark, script_keys, args(context), pipe)
                if inspect.iscoroutine(queued):
                    await queued

        return op_reading_the_record

    async def _job_context(self, keys: JobKeys) -> JobContext | None:
        """The tenant and trace context the job record stored at submission."""
        tenant, traceparent = await self.client.hmget(keys.record, ["tenant", "traceparent"])
        if tenant is None:
            return None
        return JobContext(as_text(tenant), None if traceparent is None else as_text(traceparent))

    # -- reading ---------------------------------------------------------------------

    async def status(self, job_id: str, *, tenant: str | None = None) -> JobStatus | None:
        """The job's status; None when it is unknown, expired, not a job id or (with
        ``tenant``) owned by another tenant: callers cannot tell those apart."""
        if not valid_job_id(job_id):
            return None
        return await read_status(self.client, JobKeys.of(self.names, job_id), tenant=tenant)


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
