"""The ingress application: ``create_app`` (with its lifespan) and ``run_api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import embedstream
from embedstream.adapters.jobs import JobTracker
from embedstream.adapters.redis_client import create_redis
from embedstream.api.commands import SOURCE
from embedstream.api.errors import install_error_handlers
from embedstream.api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from embedstream.api.routes import documents, health, jobs
from embedstream.config import Settings
from embedstream.logging import get_logger

log = get_logger(__name__)

DESCRIPTION = """\
The thin HTTP ingress of embedstream: it validates documents and puts one command per
document on the ingest stream (a job), then reports each job's progress through the
embed, index and persist stages. It talks to Redis only.

Every error answers `{"error", "request_id"}` (validation: `{"detail", "errors",
"request_id"}`); send `X-Request-ID` to choose the request id, `Idempotency-Key` to make
retries safe and `traceparent` to continue a W3C trace.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One Redis client (a connection pool) and one JobTracker per process."""
    settings: Settings = app.state.settings
    client = create_redis(settings.redis, socket_timeout=5.0)
    app.state.redis = client
    app.state.tracker = JobTracker(client, settings.redis.names, source=SOURCE)
    log.info(
        "api started",
        stream_prefix=settings.redis.stream_prefix,
        max_body_bytes=settings.api.max_body_bytes,
    )
    try:
        yield
    finally:
        await client.aclose()
        log.info("api stopped")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    production = settings.app.env == "production"
    app = FastAPI(
        title="embedstream ingress",
        version=embedstream.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None if production else "/docs",
        redoc_url=None if production else "/redoc",
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(documents.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    # Added last runs first: the request context wraps everything, the 413 included.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.api.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app


def run_api(settings: Settings) -> None:
    """Serve the ingress with uvicorn on ``settings.api.host:port`` (blocks)."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        access_log=False,  # RequestContextMiddleware writes one structured line per request
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
