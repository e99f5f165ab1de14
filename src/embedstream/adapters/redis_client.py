"""Building the Redis client a process uses (never at module level)."""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from embedstream.config import RedisSettings
from embedstream.errors.redis import CLIENT_RETRIES


def create_redis(
    settings: RedisSettings,
    *,
    max_connections: int | None = None,
    socket_timeout: float | None = None,
) -> redis.Redis:
    """A client that retries a command a few times over brief connection losses; longer
    outages surface to the caller (the worker loop backs off and reconnects).

    ``socket_timeout`` bounds a command on a server that hangs without closing the
    connection (the API uses one); workers leave it unset because they block on
    XREADGROUP."""
    return redis.Redis.from_url(
        settings.redis_url,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
        retry_on_error=list(CLIENT_RETRIES),
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=socket_timeout,
        max_connections=max_connections,
    )
