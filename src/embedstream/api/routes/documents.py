"""``/v1/documents``: accept upserts and deletes as jobs on the ingest stream."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, ValidationError
from starlette.applications import Starlette
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from embedstream.api.commands import build_delete, build_upserts
from embedstream.api.deps import (
    IDEMPOTENCY_KEY_PATTERN,
    ApiSettingsDep,
    IdempotencyKeyDep,
    TraceparentDep,
    TrackerDep,
    request_traceparent,
    require_json,
)
from embedstream.api.errors import AUTH_ERRORS, error_responses
from embedstream.api.routes.jobs import in_submission_order
from embedstream.api.security.fast_route import DirectRoute, direct_handler
from embedstream.api.security.guards import Guards, check_backpressure, check_write, require
from embedstream.api.security.principal import DOCUMENTS_WRITE, Principal
from embedstream.config import ApiSettings, Settings
from embedstream.ids import random_uuid
from embedstream.jobs.tracker import JobTracker, Submission
from embedstream.logging import get_logger
from embedstream.metrics.http import documents_accepted
from embedstream.schemas.api import (
    DOCUMENT_ID_MAX_CHARS,
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
# POST and DELETE answer the common case directly (``DirectRoute``), the rest generically
router = APIRouter(prefix="/v1/documents", tags=["documents"], route_class=DirectRoute)

# the same dependency as in each route's ``dependencies`` (solved once per request): the
# caller, whose tenant owns the documents
Writer = Annotated[Principal, require(DOCUMENTS_WRITE)]

MAX_REPORTED_ERRORS = 100
WRITE_SCOPES = (DOCUMENTS_WRITE,)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN.removeprefix("^").removesuffix("$"))
_SAMPLE_JOB_ID = "00000000-0000-4000-8000-000000000000"
_encode_json = msgspec.json.Encoder().encode

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
    return random_uuid()


def request_fingerprint(operation: str, content: Any) -> str:
    """What an Idempotency-Key is bound to: the operation and its canonical content, so
    key order and whitespace do not matter but any change of meaning does."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{operation}\n{canonical}".encode()).hexdigest()


def key_fingerprint(idempotency_key: str | None, operation: str, content: Callable[[], Any]) -> str:
    """``request_fingerprint`` of a request with an Idempotency-Key, "" without one: only
    such a request is bound to its content (the job record keeps no hash; SUBMIT reads
    it only for the idempotency record), so ``content`` is not even built then."""
    return "" if idempotency_key is None else request_fingerprint(operation, content())


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
    max_chars = limits.max_document_chars
    for index, doc in enumerate(body.documents):
        if len(doc.text) > max_chars:
            errors.append(
                {
                    "type": "text_too_long",
                    "loc": ("body", "documents", index, "text"),
                    "msg": f"text has {len(doc.text)} characters; the limit is {max_chars}",
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
        d if d.id is not None else d.model_copy(update={"id": random_uuid()}) for d in documents
    ]


def job_status_path(app: Starlette, job_id: str) -> str:
    """``url_path_for("get_job", job_id=...)``, from a template found once per app (a
    lookup walks every route)."""
    state = app.state
    template: str | None = getattr(state, "job_status_template", None)
    if template is None:
        template = str(app.url_path_for("get_job", job_id=_SAMPLE_JOB_ID))
        state.job_status_template = template
    return template.replace(_SAMPLE_JOB_ID, job_id)


async def submit_job(
    request: Request,
    tracker: JobTracker,
    job_id: str,
    submissions: Sequence[Submission],
    *,
    tenant: str,
    idempotency_key: str | None,
    fingerprint: str,
    traceparent: str | None,
) -> Response:
    """One atomic submit; a replayed Idempotency-Key (of the same tenant) answers with
    the existing job. The job keeps the request's ``traceparent``. The 202 is serialized
    here, in the shape of ``JobAccepted`` (the route's documented response model)."""
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
    status_url = job_status_path(request.app, submitted.job_id)
    headers = {"Location": status_url}
    if submitted.created:
        documents_accepted(submissions[0].kind, len(submissions))
    else:
        headers["Idempotent-Replayed"] = "true"
        existing = await tracker.status(submitted.job_id, tenant=tenant)
        if existing is not None:
            documents = [
                {"id": d.document_id, "kind": d.kind} for d in in_submission_order(existing.items)
            ]
            state = existing.state
    log.info(
        "job accepted" if submitted.created else "job replayed",
        job_id=submitted.job_id,
        documents=len(documents),
        idempotency_key=idempotency_key,
    )
    content = _encode_json(
        {
            "job_id": submitted.job_id,
            "status": state,
            "documents": documents,
            "status_url": status_url,
        }
    )
    return Response(content, status_code=202, headers=headers, media_type="application/json")


async def accept_upserts(
    request: Request,
    body: UpsertRequest,
    principal: Principal,
    *,
    limits: ApiSettings,
    tracker: JobTracker,
    idempotency_key: str | None,
    traceparent: str | None,
) -> Response:
    """The upsert once the request is valid and allowed: the limits that depend on the
    settings (422), then one job of one command per document."""
    if errors := limit_errors(body, limits):
        raise RequestValidationError(errors)
    job_id = new_job_id()
    documents = with_ids(body.documents)
    envelopes = build_upserts(job_id, documents, tenant=principal.tenant, traceparent=traceparent)
    submissions = [
        Submission(doc.id, "upsert", envelope)
        for doc, envelope in zip(documents, envelopes, strict=True)
        if doc.id is not None
    ]
    return await submit_job(
        request,
        tracker,
        job_id,
        submissions,
        tenant=principal.tenant,
        idempotency_key=idempotency_key,
        fingerprint=key_fingerprint(
            idempotency_key, "POST /v1/documents", lambda: body.model_dump(mode="json")
        ),
        traceparent=traceparent,
    )


def _plain_json(content_type: str | None) -> bool:
    """``application/json``, with parameters or none: a media type both FastAPI's body
    reading and ``require_json`` take for JSON (anything else goes the generic way)."""
    return (
        content_type is not None
        and content_type[:16].lower() == "application/json"
        and (len(content_type) == 16 or content_type[16] == ";")
    )


def _idempotency_key(headers: Headers) -> tuple[bool, str | None]:
    """(well formed or absent, the key)."""
    key = headers.get("idempotency-key")
    return (key is None or _IDEMPOTENCY_KEY.fullmatch(key) is not None), key


async def direct_upsert(request: Request, principal: Principal) -> Response | None:
    """``upsert_documents`` for a valid JSON request (``DirectRoute``); None for anything
    else, before any check with a side effect, so the generic handler answers it."""
    headers = request.headers
    if not _plain_json(headers.get("content-type")):
        return None
    try:
        raw = await request.body()
    except HTTPException:  # 413 from the body size limit, as the generic handler lets it
        raise
    except Exception as exc:  # what the generic handler answers for an unreadable body
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc
    if not raw:
        return None
    key_ok, idempotency_key = _idempotency_key(headers)
    if not key_ok:
        return None
    try:
        body = UpsertRequest.model_validate(json.loads(raw))
    except (ValueError, ValidationError, RecursionError):
        return None
    guards: Guards = request.app.state.guards
    await check_write(guards, principal, WRITE_SCOPES)
    settings: Settings = request.app.state.settings
    return await accept_upserts(
        request,
        body,
        principal,
        limits=settings.api,
        tracker=request.app.state.tracker,
        idempotency_key=idempotency_key,
        traceparent=request_traceparent(headers.get("traceparent")),
    )


async def direct_delete(request: Request, principal: Principal) -> Response | None:
    """``delete_document`` for a valid request (``DirectRoute``); None for anything else,
    before any check with a side effect."""
    document_id = request.path_params.get("document_id")
    if not isinstance(document_id, str) or not 1 <= len(document_id) <= DOCUMENT_ID_MAX_CHARS:
        return None
    try:
        check_document_id(document_id)
    except ValueError:
        return None
    headers = request.headers
    key_ok, idempotency_key = _idempotency_key(headers)
    if not key_ok:
        return None
    guards: Guards = request.app.state.guards
    await check_write(guards, principal, WRITE_SCOPES)
    return await accept_delete(
        request,
        document_id,
        principal,
        tracker=request.app.state.tracker,
        idempotency_key=idempotency_key,
        traceparent=request_traceparent(headers.get("traceparent")),
    )


async def accept_delete(
    request: Request,
    document_id: str,
    principal: Principal,
    *,
    tracker: JobTracker,
    idempotency_key: str | None,
    traceparent: str | None,
) -> Response:
    job_id = new_job_id()
    envelope = build_delete(job_id, document_id, tenant=principal.tenant, traceparent=traceparent)
    return await submit_job(
        request,
        tracker,
        job_id,
        [Submission(document_id, "delete", envelope)],
        tenant=principal.tenant,
        idempotency_key=idempotency_key,
        fingerprint=key_fingerprint(
            idempotency_key, "DELETE /v1/documents", lambda: {"id": document_id}
        ),
        traceparent=traceparent,
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
@direct_handler(direct_upsert)
async def upsert_documents(
    body: UpsertRequest,
    request: Request,
    tracker: TrackerDep,
    limits: ApiSettingsDep,
    traceparent: TraceparentDep,
    principal: Writer,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    """Queue one ``document.upsert.v1`` command per document, as one job. Ids are
    optional (a UUID is generated); the body may also be a single document object.
    Documents belong to the caller's tenant. Needs the scope ``documents:write``."""
    return await accept_upserts(
        request,
        body,
        principal,
        limits=limits,
        tracker=tracker,
        idempotency_key=idempotency_key,
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
@direct_handler(direct_delete)
async def delete_document(
    document_id: PathDocumentId,
    request: Request,
    tracker: TrackerDep,
    traceparent: TraceparentDep,
    principal: Writer,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    """Queue a ``document.delete.v1`` command (a job of one document) for the caller's
    tenant's copy of the id. Deleting an unknown id is not an error: the delete is
    idempotent (and tells nothing about other tenants' ids). Needs the scope
    ``documents:write``."""
    return await accept_delete(
        request,
        document_id,
        principal,
        tracker=tracker,
        idempotency_key=idempotency_key,
        traceparent=traceparent,
    )
