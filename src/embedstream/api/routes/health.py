"""Probes: ``/healthz`` (the process answers; no I/O) and ``/readyz`` (Redis answers)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from embedstream.api.deps import RedisDep
from embedstream.api.errors import RETRY_AFTER_S, error_response, error_responses
from embedstream.api.security.route import AuthenticatedRoute
from embedstream.logging import get_logger
from embedstream.schemas.api import Health, Readiness

log = get_logger(__name__)
router = APIRouter(tags=["health"], route_class=AuthenticatedRoute)

READY_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The process is alive. Touches nothing else."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=error_responses(503),
    summary="Readiness",
)
async def readyz(request: Request, client: RedisDep) -> Readiness | JSONResponse:
    """Ready when Redis answers PING within 2 seconds; 503 otherwise."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        reason = type(exc).__name__  # the details (addresses) go to the log only
        log.warning("not ready", error=f"{reason}: {exc}")
        return error_response(
            request,
            503,
            f"not ready: Redis does not answer within {READY_TIMEOUT_S:g}s ({reason})",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    return Readiness(checks={"redis": "ok"})
