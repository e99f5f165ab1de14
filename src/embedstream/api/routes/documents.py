"""``/v1/documents``: accept upserts and deletes as jobs on the ingest stream."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator
from starlette.convertors import PathConvertor, register_url_convertor

from embedstream.api.commands import build_delete, build_upsert
from embedstream.api.deps import (
    ApiSettingsDep,
    IdempotencyKeyDep,
    TraceparentDep,
    TrackerDep,
    require_json,
)
from embedstream.api.errors import AUTH_ERRORS, error_responses
from embedstream.api.routes.jobs import in_submission_order
from embedstream.api.security.guards import check_backpressure, require
from embedstream.api.security.principal import DOCUMENTS_WRITE, Principal
from embedstream.api.security.route import AuthenticatedRoute
from embedstream.config import ApiSettings
from embedstream.jobs.tracker import JobTracker, Submission
from embedstream.logging import get_logger
from embedstream.metrics.http import documents_accepted
from embedstream.schemas.api import (
    DOCUMENT_ID_MAX_CHARS,
    AcceptedDocument,
    DocumentIn,
    JobAccepted,
    UpsertRequest,
    check_document_id,
)

log = get_logger(__name__)


class DocumentIdConvertor(PathConvertor):
    """Starlette's ``path`` matches no newline, so an id with one got a bare 404; this
    one matches anything, and the id's own check answers (422, naming the character)."""

    regex = r"[\s\S]*"


register_url_convertor("document_id", DocumentIdConvertor())
router = APIRouter(prefix="/v1/documents", tags=["documents"], route_class=AuthenticatedRoute)

# the same dependency as in each route's ``dependencies`` (solved once per request): the
# caller, whose tenant owns the documents
Writer = Annotated[Principal, require(DOCUMENTS_WRITE)]

MAX_REPORTED_ERRORS = 100

_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted: the job's commands are on the ingest stream.",
        "headers": {
            "Location": {
                "description": "the job's status URL",
                "schema": {"type": "string"},
            },
            "Idempotent-Replayed": {
                "description": "'true' when an Idempotency-Key repeat returned an existing job",
                "schema": {"type": "string"},
            },
        },
    },
}

PathDocumentId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=DOCUMENT_ID_MAX_CHARS,
        description="The document id (URL-encoded; may contain '/').",
    ),
    AfterValidator(check_document_id),
]


def new_job_id() -> str:
    """A random UUID in its canonical text form (what ``is_job_id`` accepts)."""
    return str(uuid.uuid4())


def request_fingerprint(operation: str, content: Any) -> str:
    """What an Idempotency-Key is bound to: the operation and its canonical content, so
    key order and whitespace do not matter but any change of meaning does."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{operation}\n{canonical}".encode()).hexdigest()


def limit_errors(body: UpsertRequest, limits: ApiSettings) -> list[dict[str, Any]]:
    """Errors for the settings-dependent limits and duplicate ids, each naming its field."""
    errors: list[dict[str, Any]] = []
    count = len(body.documents)
    if count > limits.max_documents_per_request:
        errors.append(
            {
                "type": "too_many_documents",
                "loc": ("body", "documents"),
                "msg": f"too many documents: {count} in one request; the limit is "
                f"{limits.max_documents_per_request} (split them across requests)",
                "input": None,
            }
        )
    first_seen: dict[str, int] = {}
    for index, doc in enumerate(body.documents):
        if len(doc.text) > limits.max_document_chars:
            errors.append(
                {
                    "type": "text_too_long",
                    "loc": ("body", "documents", index, "text"),
                    "msg": f"text has {len(doc.text)} characters; the limit is "
                    f"{limits.max_document_chars}",
                    "input": None,
                }
            )
        if doc.id is None:
            continue
        if doc.id in first_seen:
            errors.append(
                {
                    "type": "duplicate_id",
                    "loc": ("body", "documents", index, "id"),
                    "msg": f"document id {doc.id!r} appears more than once in this request "
                    f"(first at documents.{first_seen[doc.id]}); send each document once",
                    "input": None,
                }
            )
        else:
            first_seen[doc.id] = index
    return errors[:MAX_REPORTED_ERRORS]


def with_ids(documents: Sequence[DocumentIn]) -> list[DocumentIn]:
    """The documents, each with an id (a new UUID where none was given)."""
    return [
        d if d.id is not None else d.model_copy(update={"id": str(uuid.uuid4())}) for d in documents
    ]


async def submit_job(
    request: Request,
    response: Response,
    tracker: JobTracker,
    job_id: str,
    submissions: Sequence[Submission],
    *,
    tenant: str,
    idempotency_key: str | None,
    fingerprint: str,
    traceparent: str | None,
) -> JobAccepted:
    """One atomic submit; a replayed Idempotency-Key (of the same tenant) answers with
    the existing job. The job keeps the request's ``traceparent``."""
    submitted = await tracker.submit(
        job_id,
        submissions,
        tenant=tenant,
        idempotency_key=idempotency_key,
        body_hash=fingerprint,
        traceparent=traceparent,
    )
    documents = [{"id": s.document_id, "kind": s.kind} for s in submissions]
    state = "queued"
    if submitted.created:
        documents_accepted(submissions[0].kind, len(submissions))
    else:
        response.headers["Idempotent-Replayed"] = "true"
        existing = await tracker.status(submitted.job_id, tenant=tenant)
        if existing is not None:
            documents = [
                {"id": d.document_id, "kind": d.kind} for d in in_submission_order(existing.items)
            ]
            state = existing.state
    status_url = str(request.app.url_path_for("get_job", job_id=submitted.job_id))
    response.headers["Location"] = status_url
    log.info(
        "job accepted" if submitted.created else "job replayed",
        job_id=submitted.job_id,
        documents=len(documents),
        idempotency_key=idempotency_key,
    )
    return JobAccepted.model_validate(
        {
            "job_id": submitted.job_id,
            "status": state,
            "documents": [AcceptedDocument.model_validate(d) for d in documents],
            "status_url": status_url,
        }
    )


@router.post(
    "",
    status_code=202,
    response_model=JobAccepted,
    responses={**_ACCEPTED, **error_responses(400, *AUTH_ERRORS, 409, 413, 415, 422, 503)},
    # in this order: credential and scope (401/403), rate limit (429), backlog (503), JSON
    dependencies=[require(DOCUMENTS_WRITE), Depends(check_backpressure), Depends(require_json)],
    summary="Create or replace documents",
)
async def upsert_documents(
    body: UpsertRequest,
    request: Request,
    response: Response,
    tracker: TrackerDep,
    limits: ApiSettingsDep,
    traceparent: TraceparentDep,
    principal: Writer,
    idempotency_key: IdempotencyKeyDep = None,
) -> JobAccepted:
    """Queue one ``document.upsert.v1`` command per document, as one job. Ids are
    optional (a UUID is generated); the body may also be a single document object.
    Documents belong to the caller's tenant. Needs the scope ``documents:write``."""
    if errors := limit_errors(body, limits):
        raise RequestValidationError(errors)
    job_id = new_job_id()
    submissions = [
        Submission(
            doc.id,
            "upsert",
            build_upsert(job_id, doc, tenant=principal.tenant, traceparent=traceparent),
        )
        for doc in with_ids(body.documents)
        if doc.id is not None
    ]
    return await submit_job(
        request,
        response,
        tracker,
        job_id,
        submissions,
        tenant=principal.tenant,
        idempotency_key=idempotency_key,
        fingerprint=request_fingerprint("POST /v1/documents", body.model_dump(mode="json")),
        traceparent=traceparent,
    )


@router.delete(
    "/{document_id:document_id}",
    status_code=202,
    response_model=JobAccepted,
    responses={**_ACCEPTED, **error_responses(*AUTH_ERRORS, 409, 413, 422, 503)},
    dependencies=[require(DOCUMENTS_WRITE), Depends(check_backpressure)],
    summary="Delete a document",
)
async def delete_document(
    document_id: PathDocumentId,
    request: Request,
    response: Response,
    tracker: TrackerDep,
    traceparent: TraceparentDep,
    principal: Writer,
    idempotency_key: IdempotencyKeyDep = None,
) -> JobAccepted:
    """Queue a ``document.delete.v1`` command (a job of one document) for the caller's
    tenant's copy of the id. Deleting an unknown id is not an error: the delete is
    idempotent (and tells nothing about other tenants' ids). Needs the scope
    ``documents:write``."""
    job_id = new_job_id()
    envelope = build_delete(job_id, document_id, tenant=principal.tenant, traceparent=traceparent)
    return await submit_job(
        request,
        response,
        tracker,
        job_id,
        [Submission(document_id, "delete", envelope)],
        tenant=principal.tenant,
        idempotency_key=idempotency_key,
        fingerprint=request_fingerprint("DELETE /v1/documents", {"id": document_id}),
        traceparent=traceparent,
    )
