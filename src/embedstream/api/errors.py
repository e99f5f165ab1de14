"""Error responses: one JSON shape for every error, each with a precise message and the
request id, and the OpenAPI entries that document them.

- validation (422): ``{"detail": "Validation failed", "errors": [{field, message, type}],
  "request_id"}``
- everything else: ``{"error": "...", "request_id": "..."}``
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from embedstream.adapters.redis_client import ReplicationTimeout
from embedstream.api.middleware import request_id_of
from embedstream.api.security.credentials import CredentialStoreUnavailable
from embedstream.errors import redis as redis_errors
from embedstream.jobs.tracker import IdempotencyConflict
from embedstream.logging import get_logger
from embedstream.schemas.api import ErrorResponse, FieldError, ValidationErrorResponse

log = get_logger(__name__)

RETRY_AFTER_S = 5

_BODY_SHAPE = (
    "the request body must be a JSON object with a 'documents' array, a single document "
    "object, or an array of documents"
)


_FASTAPI_BODY_ERROR = "There was an error parsing the body"


class UnsupportedMediaType(HTTPException):
    def __init__(self, content_type: str | None) -> None:
        got = f"got {content_type!r}" if content_type else "none was sent"
        super().__init__(
            status_code=415,
            detail=f"the body must be JSON: send Content-Type: application/json ({got})",
        )


def error_response(
    request: Request, status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=message, request_id=request_id_of(request.scope))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


#: What the JSON parser's messages mean, in our words: a parser's text is never passed
#: through (an unknown one reads "it is not valid JSON").
_JSON_REASONS = {
    "Expecting value": "a value is expected",
    "Expecting property name enclosed in double quotes": (
        "a property name in double quotes is expected"
    ),
    "Expecting ':' delimiter": "':' is expected",
    "Expecting ',' delimiter": "',' is expected",
    "Unterminated string starting at": "a string is not terminated",
    "Invalid control character at": "a control character must be escaped",
    "Invalid \\escape": "an escape sequence is invalid",
    "Invalid \\uXXXX escape": "a \\u escape is invalid",
    "Extra data": "something follows the JSON value",
}


def _json_error_message(error: Mapping[str, Any], document: Any) -> str:
    parser_says = str((error.get("ctx") or {}).get("error", ""))
    reason = _JSON_REASONS.get(parser_says, "it is not valid JSON")
    position = error["loc"][-1] if len(error["loc"]) > 1 else None
    if isinstance(position, int) and isinstance(document, str):
        line = document.count("\n", 0, position) + 1
        column = position - (document.rfind("\n", 0, position) + 1) + 1
        return f"malformed JSON body: {reason} (line {line}, column {column})"
    return f"malformed JSON body: {reason}"


def field_errors(errors: Sequence[Mapping[str, Any]], body: Any = None) -> list[FieldError]:
    """Pydantic/FastAPI error dicts as ``{field, message, type}``."""
    out: list[FieldError] = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        kind = str(error.get("type", "value_error"))
        message = str(error.get("msg", "invalid value"))
        field = ".".join(str(part) for part in loc)
        if kind == "json_invalid":
            field, message = "body", _json_error_message(error, body)
        elif loc == ("body",) and kind == "missing":
            message = f"a request body is required: {_BODY_SHAPE}"
        elif loc == ("body",) and kind in {"model_type", "model_attributes_type", "dict_type"}:
            message = _BODY_SHAPE
        elif loc == ("body", "documents") and kind == "too_short":
            message = "at least one document is required"
        elif loc[:1] == ("header",) and str(loc[-1]).lower() == "idempotency-key":
            message = "Idempotency-Key must be 1-255 printable ASCII characters without spaces"
        out.append(FieldError(field=field, message=message, type=kind))
    return out


def validation_failed(request: Request, errors: Sequence[FieldError]) -> JSONResponse:
    body = ValidationErrorResponse(errors=list(errors), request_id=request_id_of(request.scope))
    return JSONResponse(body.model_dump(), status_code=422)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors(), getattr(exc, "body", None))
    log.info("request rejected", status=422, errors=[e.model_dump() for e in errors[:10]])
    return validation_failed(request, errors)


def _undecodable_body(cause: BaseException | None) -> str:
    """What was wrong with a body FastAPI could not decode, in our words (never the
    Python exception's text)."""
    if isinstance(cause, UnicodeDecodeError):
        return f"malformed JSON body: it is not valid UTF-8 (byte {cause.start})"
    return "malformed JSON body: it could not be decoded as JSON text"


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
        # FastAPI's answer to a body that json.loads refuses before parsing (not UTF-8)
        log.info("request body undecodable", error=repr(exc.__cause__))
        error = FieldError(
            field="body", message=_undecodable_body(exc.__cause__), type="json_invalid"
        )
        return validation_failed(request, [error])
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
        detail = f"{detail}: {request.method} {request.url.path}"
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return error_response(request, exc.status_code, detail, headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path. Starlette's 405 names only
    the first matching route's (``GET`` and ``DELETE /v1/documents/{id}`` are routes of
    two routers). The routers are the ones ``create_app`` lists on ``app.state``."""
    routes = [
        *request.app.router.routes,
        *(route for router in getattr(request.app.state, "routers", ()) for route in router.routes),
    ]
    methods: set[str] = set()
    probe = {**request.scope, "method": "__none__"}
    for route in routes:
        if isinstance(route, Route) and route.methods and route.matches(probe)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


async def _on_idempotency_conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IdempotencyConflict)
    return error_response(request, 409, str(exc))


async def _on_redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("redis unavailable", error=f"{type(exc).__name__}: {exc}")
    message = f"the job store (Redis) is unavailable; retry in {RETRY_AFTER_S} seconds"
    if request.method not in ("GET", "HEAD"):
        message = (
            f"the job store (Redis) is unavailable, so the request could not be accepted; "
            f"retry in {RETRY_AFTER_S} seconds with the same Idempotency-Key (a retry "
            f"with the key cannot enqueue twice)"
        )
    return error_response(request, 503, message, {"Retry-After": str(RETRY_AFTER_S)})


async def _on_not_replicated(request: Request, exc: Exception) -> JSONResponse:
    log.warning("write not replicated in time", error=str(exc))
    message = (
        f"the request was written but not confirmed on enough Redis replicas ({exc}); "
        f"retry in {RETRY_AFTER_S} seconds with the same Idempotency-Key (the retry does "
        "not enqueue twice and answers 202 once the job is replicated)"
    )
    return error_response(request, 503, message, {"Retry-After": str(RETRY_AFTER_S)})


async def _on_credential_store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("credential store unavailable", error=str(exc))
    message = (
        f"the credential store (PostgreSQL) is unavailable, so the API key could not be "
        f"checked; retry in {RETRY_AFTER_S} seconds"
    )
    return error_response(request, 503, message, {"Retry-After": str(RETRY_AFTER_S)})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CredentialStoreUnavailable, _on_credential_store_unavailable)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(IdempotencyConflict, _on_idempotency_conflict)
    app.add_exception_handler(ReplicationTimeout, _on_not_replicated)
    for error_type in redis_errors.UNAVAILABLE:
        app.add_exception_handler(error_type, _on_redis_unavailable)


# -- OpenAPI -------------------------------------------------------------------------------

_DESCRIPTIONS = {
    400: "Malformed request (for example an invalid Content-Length)",
    401: "No credential, or one that is malformed, unknown, expired or revoked",
    403: "The credential lacks a scope this operation needs",
    404: "Not found",
    409: "Idempotency-Key reused with a different request",
    413: "Request body larger than the configured limit",
    415: "The body is not JSON",
    422: "Validation failed: every problem with its field",
    429: "The credential's rate limit is exhausted, or too many failed authentication "
    "attempts came from this client or for this API key; retry after the Retry-After seconds",
    500: "Unexpected error (logged with the request id)",
    503: "Redis or the credential store unavailable, or (writes) the pipeline is "
    "backlogged; retry after the Retry-After seconds",
}

_RETRY_AFTER: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer"},
    }
}
_HEADERS: dict[int, dict[str, dict[str, Any]]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the Bearer challenge (RFC 6750), with error and error_description",
            "schema": {"type": "string"},
        }
    },
    403: {
        "WWW-Authenticate": {
            "description": 'Bearer error="insufficient_scope" and the scope needed',
            "schema": {"type": "string"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}


AUTH_ERRORS = (401, 403, 429)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the given error status codes."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model = ValidationErrorResponse if code == 422 else ErrorResponse
        entry: dict[str, Any] = {"model": model, "description": _DESCRIPTIONS[code]}
        if code in _HEADERS:
            entry["headers"] = _HEADERS[code]
        responses[code] = entry
    return responses


def with_description(code: int, description: str) -> dict[int | str, dict[str, Any]]:
    """``error_responses(code)`` with an operation's own description."""
    entry = error_responses(code)[code]
    return {code: {**entry, "description": description}}
