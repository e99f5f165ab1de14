"""Rate limits per credential, in Redis (shared by every API process).

Built on the ``limits`` library (sliding-window counters kept in Redis by its Lua
scripts, on the API's own redis-py connection pool) rather than hand-written counters.
Keys live under ``{prefix}:ratelimit``. ``EMBEDSTREAM_RATE_LIMIT`` holds one or more
limits ("100/minute", "10/second;1000/hour"); every one of them must allow a request.
"""

from __future__ import annotations

import math
import time

import redis.asyncio as redis
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.exceptions import HTTPException

from embedstream.api.principal import Principal
from embedstream.streams.names import StreamNames


class RateLimited(HTTPException):
    def __init__(self, item: RateLimitItem, retry_after_s: int) -> None:
        super().__init__(
            status_code=429,
            detail=f"rate limit exceeded: this credential is allowed {item} requests; "
            f"retry in {retry_after_s} seconds",
            headers={"Retry-After": str(retry_after_s), "RateLimit-Policy": _policy(item)},
        )


def _policy(item: RateLimitItem) -> str:
    return f"{item.amount};w={item.get_expiry()}"


class CredentialRateLimiter:
    def __init__(self, client: redis.Redis, names: StreamNames, spec: str) -> None:
        self.items: list[RateLimitItem] = parse_many(spec) if spec else []
        self.storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=names.key("ratelimit"),
            connection_pool=client.connection_pool,  # type: ignore[arg-type]
        )
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)

    async def check(self, principal: Principal) -> None:
        """Count one request of ``principal``; ``RateLimited`` (429) when a limit is hit."""
        for item in self.items:
            if not await self.strategy.hit(item, principal.credential_id):
                stats = await self.strategy.get_window_stats(item, principal.credential_id)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(item, retry_after)
