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

import dataclasses
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
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
from embedstream.streams.messages import DeadLetterOps, KeyedOp, TransactionOp
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
        self._open = client.register_script(scripts.OPEN_JOB)
        self._enqueue_partition = client.register_script(scripts.ENQUEUE_PARTITION)
        self._close = client.register_script(scripts.CLOSE_JOB)
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

    def _record_args(
        self, job_id: str, body_hash: str, tenant: str, traceparent: str | None, documents: int
    ) -> list[Any]:
        """The ARGV both submit scripts start with (``scripts.OPEN_RECORD``)."""
        return [
            job_id,
            body_hash,
            datetime.now(UTC).isoformat(),
            self.ttl_s,
            tenant,
            traceparent or "",
            documents,
        ]

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
        per tenant. With partitions, in idempotent steps instead (``_submit_partitioned``).
        Returns once the writes are on the replicas ``replica_ack`` asks for."""
        if self.names.partitioned:
            return await self._submit_partitioned(
                job_id,
                submissions,
                tenant=tenant,
                idempotency_key=idempotency_key,
                body_hash=body_hash,
                traceparent=traceparent,
            )
        args = self._record_args(job_id, body_hash, tenant, traceparent, len(submissions))
        for sub in submissions:
            args.extend((sub.document_id, sub.kind, sub.envelope.attributes(), sub.envelope.data))
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

    async def _submit_partitioned(
        self,
        job_id: str,
        submissions: Sequence[Submission],
        *,
        tenant: str,
        idempotency_key: str | None,
        body_hash: str,
        traceparent: str | None,
    ) -> Submitted:
        """A submit whose commands go to several partitions (hash slots of their own on a
        cluster), in steps that are each atomic and idempotent (``scripts.OPEN_JOB``):

        1. OPEN: idempotency record, job record, its documents (no version yet);
        2. ENQUEUE, per partition: its commands, once per (job, partition): a marker
           holds the entry ids, and a second call answers them without adding anything;
        3. CLOSE: the documents' versions and ``enqueued`` on the job record.

        The caller answers 202 only after all three, so a 202 still means every command
        is in a stream. A crash in between leaves an open job whose enqueued commands
        are processed; the request retried with the same Idempotency-Key finds the job
        not ``enqueued`` and runs 2 and 3 again with the job's id (the markers keep
        commands already added from being added twice). Without an Idempotency-Key a
        retry is a new job, and the open one expires with its TTL."""
        keys = JobKeys.of(self.names, job_id)
        idem_key = self.idempotency_key(tenant, idempotency_key) if idempotency_key else keys.record
        args = self._record_args(job_id, body_hash, tenant, traceparent, len(submissions))
        for sub in submissions:
            args.extend((sub.document_id, sub.kind))
        reply: list[bytes] = await self._open(
            keys=[idem_key, keys.record, keys.documents], args=args
        )
        existing_id, outcome = reply[0].decode(), reply[1].decode()
        if outcome == "conflict":
            raise IdempotencyConflict(existing_id)
        if outcome == "existing":
            keys = JobKeys.of(self.names, existing_id)
            if await self.client.hget(keys.record, "enqueued") is not None:
                await self._wait_for_replicas(submissions, tenant, keys)
                return Submitted(existing_id, created=False)
            # an earlier attempt stopped half way: finish it, as that job
            submissions = [with_job_id(sub, existing_id) for sub in submissions]
        versions: dict[str, str] = {}
        for view, subs in self._by_partition(submissions, tenant).items():
            versions.update(await self._enqueue(view, existing_id, subs, tenant))
        close_args: list[str] = []
        for sub in submissions:
            close_args.extend((sub.document_id, f"{sub.kind}|{versions[sub.document_id]}"))
        await self._close(keys=[keys.record, keys.documents], args=close_args)
        await self._wait_for_replicas(submissions, tenant, keys)
        return Submitted(existing_id, created=outcome == "new")

    def _by_partition(
        self, submissions: Sequence[Submission], tenant: str
    ) -> dict[StreamNames, list[Submission]]:
        groups: dict[StreamNames, list[Submission]] = {}
        for sub in submissions:
            groups.setdefault(self.names.for_document(tenant, sub.document_id), []).append(sub)
        return groups

    async def _enqueue(
        self, view: StreamNames, job_id: str, subs: Sequence[Submission], tenant: str
    ) -> dict[str, str]:
        """One partition's commands of a job, once; document id -> entry id."""
        in_flight = InFlight(self.client, view)
        args: list[Any] = [self.ttl_s, tenant, len(subs)]
        for sub in subs:  # the envelope's stream fields, ``ce`` and ``data``
            args.extend((sub.document_id, sub.envelope.attributes(), sub.envelope.data))
        marker = view.key("ingest", "enqueued", job_id)
        flat: list[bytes] = await self._enqueue_partition(
            keys=[marker, view.ingest, *in_flight.keys], args=args
        )
        return {as_text(flat[i]): as_text(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def _wait_for_replicas(
        self, submissions: Sequence[Submission], tenant: str, keys: JobKeys
    ) -> None:
        """``replica_ack`` on every node this submit wrote to: the job's, each
        partition's."""
        await self.replica_ack.wait(self.client, keys.record)
        for view in self._by_partition(submissions, tenant):
            await self.replica_ack.wait(self.client, view.ingest)

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
            self.names.job_counts,
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

            return KeyedOp(keys.record, op)

        async def op_reading_the_record(pipe: Pipeline) -> None:
            context = await self._job_context(keys)
            if context is not None:  # an unknown or expired job: nothing to mark
                queued = queue_script(self._mark, script_keys, args(context), pipe)
                if inspect.iscoroutine(queued):
                    await queued

        return KeyedOp(keys.record, op_reading_the_record)

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


def with_job_id(submission: Submission, job_id: str) -> Submission:
    """The submission with its command's ``job_id`` replaced (resuming an open job)."""
    envelope = submission.envelope
    payload = json.loads(envelope.data)
    payload["job_id"] = job_id
    data = json.dumps(payload, separators=(",", ":")).encode()
    return dataclasses.replace(submission, envelope=msgspec.structs.replace(envelope, data=data))


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
