"""``/v1/jobs``: the state of a job and of each of its documents per stage."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, HTTPException

from embedstream.api.deps import TrackerDep
from embedstream.api.errors import AUTH_ERRORS, error_responses
from embedstream.api.security.guards import require
from embedstream.api.security.principal import JOBS_READ, Principal
from embedstream.api.security.route import AuthenticatedRoute
from embedstream.jobs.status import DocumentStatus, JobStatus
from embedstream.schemas.api import JobOut, is_job_id
from embedstream.streams.names import stream_id_to_version

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=AuthenticatedRoute)


def in_submission_order(items: Iterable[DocumentStatus]) -> list[DocumentStatus]:
    """Documents in the order of their ingest entries (numeric, not string, order)."""
    return sorted(items, key=lambda item: stream_id_to_version(item.version))


def job_out(status: JobStatus) -> JobOut:
    return JobOut.model_validate(
        {
            "job_id": status.job_id,
            "state": status.state,
            "total": status.documents,
            "done": status.done,
            "failed": status.failed,
            "created_at": status.created_at,
            "finished_at": status.finished_at,
            "documents": [
                {
                    "id": item.document_id,
                    "kind": item.kind,
                    "version": item.version,
                    "state": item.state,
                    "stages": item.stages,
                    "error": item.error,
                }
                for item in in_submission_order(status.items)
            ],
        }
    )


@router.get(
    "/{job_id}",
    name="get_job",
    response_model=JobOut,
    responses=error_responses(*AUTH_ERRORS, 404, 422, 503),
    summary="Job status",
)
async def get_job(
    job_id: str,
    tracker: TrackerDep,
    principal: Annotated[Principal, require(JOBS_READ)],
) -> JobOut:
    """The job's state (queued, completed, failed) and, per document, its state and the
    state of each stage (embed, index, persist). Jobs are kept for 7 days. Needs the
    scope ``jobs:read``; another tenant's job, and anything that is not a job id (the
    `job_id` of a 202: a UUID), is answered like an unknown job (404)."""
    # only a job id ever names a Redis key: anything else is unknown before any lookup
    status = await tracker.status(job_id, tenant=principal.tenant) if is_job_id(job_id) else None
    if status is None:
        raise HTTPException(
            status_code=404,
            detail="job not found (unknown, another tenant's, or older than the 7-day retention)",
        )
    return job_out(status)
