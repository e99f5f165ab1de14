"""The envelopes of ``{prefix}:results``: ``job.completed`` / ``job.failed`` and
``document.deleted``, built by ``Envelope`` like every other event.

They are written by the job bookkeeping (``MARK_STAGE``) in the MULTI/EXEC of a stage's
ack, since only that script knows when a document or a job is finished: each stage mark
carries the envelopes it may need, ready to be added. A ``document.deleted`` is complete
here; of a job event, the script adds the ``data`` (its counts and failures, known when
the job ends) to the attributes prepared here.

Every result carries the job's tenant and trace context (the ``traceparent`` the ingress
received with the request, which every command of the job carries and the job record
keeps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec
from pydantic import BaseModel

from embedstream.schemas.envelope import Envelope
from embedstream.schemas.events import (
    DOCUMENT_DELETED,
    DOCUMENT_DELETED_V2,
    JOB_COMPLETED,
    JOB_FAILED,
    DocumentDeleted,
    DocumentDeletedV2,
)
from embedstream.schemas.versions import version_text

DELETED_TYPES = {1: DOCUMENT_DELETED, 2: DOCUMENT_DELETED_V2}
RESULTS_SOURCE = "embedstream"
"""The ``source`` of every result: the job bookkeeping, whichever stage's ack runs it."""


@dataclass(frozen=True)
class JobContext:
    """What a job's results share: its tenant and its trace context."""

    tenant: str
    traceparent: str | None = None


def deleted_payloads(
    job_id: str, document_id: str, version: int, versions: Sequence[int]
) -> list[tuple[str, BaseModel]]:
    """(type, payload) of ``document.deleted`` in each type version of ``versions``;
    invalid values raise (pydantic's ``ValidationError``)."""
    payloads: list[tuple[str, BaseModel]] = []
    for type_version in versions:
        payload: BaseModel
        if type_version == 1:
            payload = DocumentDeleted(job_id=job_id, document_id=document_id, version=version)
        else:
            payload = DocumentDeletedV2(
                job_id=job_id, document_id=document_id, version=version_text(version)
            )
        payloads.append((DELETED_TYPES[type_version], payload))
    return payloads


class ResultEnvelopes:
    """Builds the results' envelopes."""

    def __init__(self, source: str = RESULTS_SOURCE) -> None:
        self.source = source

    def job_attributes(self, job_id: str, job: JobContext, now: datetime) -> tuple[str, str]:
        """The ``ce`` of ``job.completed`` and of ``job.failed`` for ``job_id``, one of
        which the bookkeeping adds (with its ``data``) when the job ends at ``now``. A job
        has one such event, so both share an id."""
        completed = self._envelope(JOB_COMPLETED, b"", job, job_id, now)
        failed = msgspec.structs.replace(completed, type=JOB_FAILED)
        return completed.attributes(), failed.attributes()

    def deleted(
        self,
        document_id: str,
        payloads: Sequence[tuple[str, BaseModel]],
        job: JobContext,
        now: datetime,
    ) -> list[str]:
        """``document.deleted`` envelopes as flat (``ce``, ``data``) pairs."""
        flat: list[str] = []
        for event_type, payload in payloads:
            data = payload.model_dump_json().encode()
            envelope = self._envelope(event_type, data, job, document_id, now)
            flat += [envelope.attributes(), data.decode()]
        return flat

    def _envelope(
        self, event_type: str, data: bytes, job: JobContext, subject: str, now: datetime
    ) -> Envelope:
        return Envelope.new(
            event_type,
            data=data,
            source=self.source,
            tenant=job.tenant,
            subject=subject,
            traceparent=job.traceparent,
            time=now,
        )
