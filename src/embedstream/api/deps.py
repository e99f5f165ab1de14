"""Dependencies of the routes, as ``Annotated`` aliases.

Clients live on ``app.state`` (created by the lifespan), never at module level. Every
dependency is an ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread
(anyio's thread pool), which costs far more than these attribute reads.
"""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as redis
from fastapi import Depends, Header, Request

from embedstream.api.commands import valid_traceparent
from embedstream.api.errors import UnsupportedMediaType
from embedstream.config import ApiSettings, Settings
from embedstream.jobs.tracker import JobTracker
from embedstream.tracing import current_traceparent

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_api_settings(request: Request) -> ApiSettings:
    settings: Settings = request.app.state.settings
    return settings.api


async def get_redis(request: Request) -> redis.Redis:
    client: redis.Redis = request.app.state.redis
    return client


async def get_tracker(request: Request) -> JobTracker:
    tracker: JobTracker = request.app.state.tracker
    return tracker


async def get_traceparent(
    traceparent: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str | None:
    """The context the request's commands carry (``request_traceparent``)."""
    return request_traceparent(traceparent)


def request_traceparent(header: str | None) -> str | None:
    """The request's server span when tracing is on (it continues an incoming
    ``traceparent``), else the incoming W3C ``traceparent`` header if valid (an invalid
    one is ignored)."""
    return current_traceparent() or valid_traceparent(header)


async def require_json(request: Request) -> None:
    """415 unless the body is declared as JSON (``application/json`` or ``+json``)."""
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        raise UnsupportedMediaType(content_type)


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/...+json`` (parameters ignored)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


ApiSettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
TrackerDep = Annotated[JobTracker, Depends(get_tracker)]
TraceparentDep = Annotated[str | None, Depends(get_traceparent)]
IdempotencyKeyDep = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Makes a retry safe: the same key with the same body returns the "
        "same job and enqueues nothing; with a different body it is refused (409). "
        "1-255 printable ASCII characters, no spaces. Remembered for 7 days.",
    ),
]
