"""``embedstream exporter``: the queue gauges (``embedstream.metrics.queues``) served on
their own, for deployments where no single API process should report them (several API
replicas, or no API at all). Run one per deployment: every replica would report the same
gauges again.

``GET /metrics``: the queue gauges and the exporter's own process metrics; ``GET
/healthz``: 200 while it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from embedstream.adapters.redis_client import create_redis
from embedstream.config import Settings
from embedstream.logging import get_logger
from embedstream.metrics.queues import QueueMetrics
from embedstream.streams.status_cache import StatusCache

log = get_logger("embedstream.exporter")


async def metrics(request: Request) -> Response:
    queues: QueueMetrics = request.app.state.queue_metrics
    body = generate_latest(REGISTRY) + await queues.exposition()
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def exporter_app(settings: Settings) -> Starlette:
    """The exporter's application: one Redis client, one ``StatusCache``."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = create_redis(settings.redis, socket_timeout=5.0)
        names = settings.redis.names()
        cache = StatusCache(client, names, ttl_s=settings.metrics.metrics_cache_s)
        app.state.queue_metrics = QueueMetrics(
            cache, active_idle_ms=settings.consumer.visibility_timeout_ms
        )
        log.info("exporter started", stream_prefix=names.prefix)
        try:
            yield
        finally:
            await client.aclose()

    return Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz)], lifespan=lifespan
    )


def run_exporter(settings: Settings, host: str, port: int) -> None:
    """Serve the exporter with uvicorn on ``host:port`` (blocks)."""
    import uvicorn

    uvicorn.run(
        exporter_app(settings),
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        server_header=False,
    )
