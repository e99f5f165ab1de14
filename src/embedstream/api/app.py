"""The ingress application: ``create_app`` (with its lifespan) and ``run_api``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import redis.asyncio as redis
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

import embedstream
from embedstream import tracing
from embedstream.adapters.redis_client import ReplicaAck, create_redis
from embedstream.api.console import mount_console
from embedstream.api.errors import install_error_handlers
from embedstream.api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from embedstream.api.routes import (
    admin,
    admin_dead_letters,
    documents,
    health,
    jobs,
    read,
    search,
)
from embedstream.api.security.route import AuthenticatedRoute
from embedstream.api.security.setup import build_guards, check_production, create_key_pool
from embedstream.api.stores import open_read_side
from embedstream.config import Settings
from embedstream.errors import redis as redis_errors
from embedstream.jobs.tracker import JobTracker
from embedstream.logging import get_logger
from embedstream.streams.partitions import check_partitions
from embedstream.streams.status_cache import StatusCache

if TYPE_CHECKING:
    from embedstream.metrics.queues import QueueMetrics

log = get_logger(__name__)

CORS_REQUEST_HEADERS = [
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "Idempotency-Key",
    "X-Request-ID",
    "traceparent",
]
CORS_EXPOSED_HEADERS = [
    "Location",
    "Retry-After",
    "X-Request-ID",
    "Idempotent-Replayed",
    "WWW-Authenticate",
]

DESCRIPTION = """\
The thin HTTP ingress of embedstream: it validates documents and puts one command per
document on the ingest stream (a job), then reports each job's progress through the
embed, index and persist stages. It talks to Redis, and to PostgreSQL for API keys and
reads; searching also embeds the query and asks Chroma.

Every operation but the probes needs a credential: `Authorization: Bearer <JWT>` (an
HS256 OAuth2 access token) or an API key (`X-API-Key: es_...` or `Authorization: Bearer
es_...`). Scopes: `documents:write` (POST/DELETE documents), `documents:read` (GET
documents), `jobs:read` (job status), `search:read` (search), `admin` (everything within
the credential's tenant, the admin endpoints included), `operator` (the admin endpoints
across every tenant). 401 means no valid credential, 403 a missing scope, 429 the
credential's rate limit or too many failed authentication attempts (see `Retry-After`);
writes answer 503 while the pipeline is backlogged. The credential is checked before the
request body is read.

Reading: `POST /v1/search` (scope `search:read`) searches the caller's tenant's chunks,
by meaning (`vector`) or also by exact terms (`hybrid`), with metadata and text filters;
`GET /v1/documents` and `GET /v1/documents/{id}` (scope `documents:read`) show what is
stored. Every read is confined to the caller's tenant.

Every error answers `{"error", "request_id"}` (validation: `{"detail", "errors",
"request_id"}`); send `X-Request-ID` to choose the request id, `Idempotency-Key` to make
retries safe and `traceparent` to continue a W3C trace.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One Redis client (a connection pool), one JobTracker, one small PostgreSQL pool
    (API keys only) and the guards per process."""
    settings: Settings = app.state.settings
    client = create_redis(settings.redis, socket_timeout=5.0)
    try:  # the API writes commands to partitions: refuse a number that disagrees
        await check_partitions(client, settings.redis.names())
    except redis_errors.TRANSIENT as exc:  # Redis away: the workers check too
        log.warning("partitions not checked: redis unavailable", error=str(exc))
    pool = await create_key_pool(settings)
    app.state.redis = client
    app.state.tracker = JobTracker(
        client, settings.redis.names(), replica_ack=ReplicaAck.of(settings.redis)
    )
    app.state.guards = build_guards(settings, client, pool)
    await app.state.guards.keys.warm()
    read_side = await open_read_side(app, settings)
    app.state.queue_metrics = queue_metrics(settings, client)
    log.info(
        "api started",
        stream_prefix=settings.redis.stream_prefix,
        max_body_bytes=settings.api.max_body_bytes,
        rate_limit=settings.api.rate_limit or "off",
        auth_failure_limit=settings.auth.auth_failure_limit or "off",
        max_ingest_lag=settings.api.max_ingest_lag or "off",
        jwt=settings.auth.secret is not None,
    )
    try:
        yield
    finally:
        await read_side.aclose()
        try:
            await asyncio.wait_for(pool.close(), 10.0)
        except TimeoutError:
            pool.terminate()
        await client.aclose()
        log.info("api stopped")


def queue_metrics(settings: Settings, client: redis.Redis) -> QueueMetrics | None:
    """The queue gauges this process reports on ``/metrics`` (``EMBEDSTREAM_METRICS_QUEUES``)."""
    if not (settings.metrics.metrics and settings.metrics.metrics_queues):
        return None
    from embedstream.metrics.queues import QueueMetrics

    names = settings.redis.names()
    cache = StatusCache(client, names, ttl_s=settings.metrics.metrics_cache_s)
    return QueueMetrics(cache, active_idle_ms=settings.consumer.visibility_timeout_ms)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ingress. Raises ``ProductionConfigError`` in production with unsafe settings."""
    settings = settings or Settings()
    check_production(settings)
    tracing.setup_tracing("embedstream-api", instrument_clients=True)
    production = settings.app.env == "production"
    docs = settings.api.api_docs if settings.api.api_docs is not None else not production
    app = FastAPI(
        title="embedstream ingress",
        version=embedstream.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    # routes added to the app itself also check credentials before reading a body
    app.router.route_class = AuthenticatedRoute
    install_error_handlers(app)
    app.state.routers = [
        documents.router,
        jobs.router,
        read.router,
        search.router,
        health.router,
        admin.router,
        admin_dead_letters.router,
    ]
    for router in app.state.routers:
        app.include_router(router)
    metrics = settings.metrics.metrics
    if metrics:
        from embedstream.metrics import http as http_metrics

        app.include_router(http_metrics.router)
    console = settings.api.console if settings.api.console is not None else not production
    if console:
        mount_console(app)
    # Added last runs first: the request context wraps everything, the 413 included.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.api.max_body_bytes)
    if settings.api.cors_origins:
        # Credentials travel in headers, never cookies: no allow_credentials, and the
        # origins are explicit (the settings refuse "*").
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    if metrics:  # inside the request context: its last-resort 500s are counted too
        app.add_middleware(http_metrics.MetricsMiddleware)
    app.add_middleware(RequestContextMiddleware)
    tracing.instrument_app(app)  # outermost: the server span covers everything
    return app


#: How ``run_api`` runs uvicorn (the ingress benchmark serves its floor app with the same).
UVICORN_OPTIONS: dict[str, object] = {
    "access_log": False,  # RequestContextMiddleware writes one structured line per request
    "log_config": None,  # uvicorn's loggers go to ours (with secrets redacted)
    "proxy_headers": True,
    "server_header": False,
    "timeout_graceful_shutdown": 30,
}


def run_api(settings: Settings) -> None:
    """Serve the ingress with uvicorn on ``settings.api.host:port`` (blocks)."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        **UVICORN_OPTIONS,  # type: ignore[arg-type]
    )
