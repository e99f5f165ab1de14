"""The ingress' metrics: a plain ASGI middleware counting requests, and ``GET /metrics``.

- ``embedstream_http_requests_total{route, method, status}``: ``route`` is the route's
  template (``/v1/jobs/{job_id}``); ``other`` for paths no route matches (so a scan of
  random paths adds no series) and for answers given before routing (a 413 of a declared
  Content-Length over the limit);
- ``embedstream_http_request_duration_seconds{route, method}``: latency histogram;
- ``embedstream_documents_accepted_total{operation}`` (upsert, delete) and
  ``embedstream_request_bytes_accepted_total``: what the 202 answers took in (the
  request's ``Content-Length``).

Per request the middleware costs two clock reads, a counter and a histogram update.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedstream.metrics.queues import QueueMetrics

REQUESTS = Counter(
    "embedstream_http_requests",
    "Requests answered by the ingress, by route template, method and status.",
    ["route", "method", "status"],
)
DURATION = Histogram(
    "embedstream_http_request_duration_seconds",
    "Time to answer a request, by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DOCUMENTS_ACCEPTED = Counter(
    "embedstream_documents_accepted",
    "Documents accepted by the ingress (a command on the ingest stream each).",
    ["operation"],
)
BYTES_ACCEPTED = Counter(
    "embedstream_request_bytes_accepted",
    "Request body bytes of the requests the ingress accepted (202).",
)
UNMATCHED = "other"


def route_template(scope: Scope) -> str:
    """The template of the route that answered (set by the router on the scope);
    ``other`` for an answer given before routing or for a path no route matches."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    """Counts every HTTP request by route template, method and status (see module doc).

    The labelled children are looked up once per (route, method, status) and kept: the
    label sets are small and fixed (route templates, methods, statuses), and
    ``labels()`` costs more than the update itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._count(scope, status, time.perf_counter() - started)

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        route, method = route_template(scope), scope["method"]
        key = (route, method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = REQUESTS.labels(route, method, str(status))
        counter.inc()
        histogram = self._durations.get(key[:2])
        if histogram is None:
            histogram = self._durations[key[:2]] = DURATION.labels(route, method)
        histogram.observe(seconds)
        if status == 202:
            for name, value in scope["headers"]:
                if name == b"content-length":
                    BYTES_ACCEPTED.inc(int(value) if value.isdigit() else 0)
                    break


_ACCEPTED_BY_OPERATION: dict[str, Any] = {}


def documents_accepted(operation: str, count: int) -> None:
    counter = _ACCEPTED_BY_OPERATION.get(operation)
    if counter is None:
        counter = _ACCEPTED_BY_OPERATION[operation] = DOCUMENTS_ACCEPTED.labels(operation)
    counter.inc(count)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The process' metrics and, where this process reports them, the queue gauges."""
    body = generate_latest(REGISTRY)
    queues: QueueMetrics | None = getattr(request.app.state, "queue_metrics", None)
    if queues is not None:
        body += await queues.exposition()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
