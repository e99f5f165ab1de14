"""Pure ASGI middleware: request context (id, timing, access log, last-resort 500) and
the request body size limit.

Pure ASGI rather than ``BaseHTTPMiddleware`` so request bodies stream through untouched
and contextvars bound here are seen by the route.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Collection
from typing import Any

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedstream.logging import get_logger
from embedstream.schemas.api import ErrorResponse

log = get_logger("embedstream.api.access")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")
_PROBE_PATHS = frozenset({"/healthz", "/readyz"})
PRINCIPAL_LOG_KEYS = ("tenant", "credential_id")


def request_id_of(scope: Scope) -> str:
    """The id the request-context middleware gave this request."""
    state: dict[str, Any] = scope.get("state") or {}
    request_id = state.get("request_id") or structlog.contextvars.get_contextvars().get(
        "request_id"
    )
    return str(request_id or "-")


def choose_request_id(incoming: str | None) -> str:
    """The caller's X-Request-ID when it is sane (1-128 URL-safe characters), else a
    new one."""
    # fullmatch: with match and '$', "abc\n" passed and went back out in a header
    if incoming and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def _error(
    scope: Scope, status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=message, request_id=request_id_of(scope))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class RequestContextMiddleware:
    """Outermost middleware: request id (``X-Request-ID`` in and out, bound in structlog
    contextvars), ``Server-Timing``, one access log line per request, and a JSON 500
    for anything unhandled."""

    def __init__(self, app: ASGIApp, *, quiet_paths: Collection[str] = _PROBE_PATHS) -> None:
        self.app = app
        self.quiet_paths = frozenset(quiet_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose_request_id(Headers(scope=scope).get("x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        started_at = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                elapsed_ms = (time.perf_counter() - started_at) * 1000
                headers.append("Server-Timing", f"app;dur={elapsed_ms:.1f}")
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_headers)
            except Exception:
                log.exception("unhandled error", method=scope["method"], path=scope["path"])
                if response_started:
                    raise
                response = _error(
                    scope, 500, "internal server error; the request id identifies it in the logs"
                )
                await response(scope, receive, send_with_headers)
            finally:
                self._access_log(scope, status, started_at, request_id)
                # bound by authentication for this request's lines; never for the next
                structlog.contextvars.unbind_contextvars(*PRINCIPAL_LOG_KEYS)

    def _access_log(self, scope: Scope, status: int, started_at: float, request_id: str) -> None:
        duration_ms = round((time.perf_counter() - started_at) * 1000, 2)
        quiet = scope["path"] in self.quiet_paths and status < 400
        (log.debug if quiet else log.info)(
            "request",
            method=scope["method"],
            path=scope["path"],
            status=status,
            duration_ms=duration_ms,
            request_id=request_id,
        )


class BodyTooLarge(HTTPException):
    """The request body is over the limit. An ``HTTPException`` so FastAPI's body reading
    lets it through to the exception handlers."""

    def __init__(self, limit: int, *, declared: int | None = None) -> None:
        if declared is not None:
            detail = (
                f"request body too large: Content-Length is {declared} bytes; "
                f"the limit is {limit} bytes"
            )
        else:
            detail = f"request body too large: it exceeds the limit of {limit} bytes"
        super().__init__(status_code=413, detail=detail, headers={"Connection": "close"})


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_body_bytes``: at once when Content-Length says so, and
    while streaming when it does not (chunked) or lies."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                response = _error(scope, 400, f"invalid Content-Length header: {declared[:40]!r}")
                await response(scope, receive, send)
                return
            if int(declared) > limit:
                exc = BodyTooLarge(limit, declared=int(declared))
                response = _error(scope, 413, exc.detail, {"Connection": "close"})
                await response(scope, receive, send)
                return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            # Normally the exception handlers answer; this covers a body read outside
            # a route (another middleware, say).
            if response_started:
                raise
            response = _error(scope, 413, exc.detail, {"Connection": "close"})
            await response(scope, receive, send)
