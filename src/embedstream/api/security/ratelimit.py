"""Rate limits in Redis (shared by every API process): requests per credential, and
failed credential checks per client address and per API key id.

Built on the ``limits`` library (sliding-window counters kept in Redis by its Lua
scripts, on the API's own redis-py connection pool) rather than hand-written counters.
Keys live under ``{prefix}:ratelimit``; what identifies a caller in a key is a digest or
a checked syntax (an IP address, a key id of 16 hex digits), never raw request text.
A spec holds one or more limits ("100/minute", "10/second;1000/hour"); every one of them
must allow a request.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import redis.asyncio as redis
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.exceptions import HTTPException

from embedstream.adapters.redis_client import is_cluster_client
from embedstream.api.security.principal import Principal
from embedstream.streams.names import StreamNames


class RateLimited(HTTPException):
    def __init__(self, item: RateLimitItem, retry_after_s: int) -> None:
        super().__init__(
            status_code=429,
            detail=f"rate limit exceeded: this credential is allowed {item} requests; "
            f"retry in {retry_after_s} seconds",
            headers={"Retry-After": str(retry_after_s), "RateLimit-Policy": _policy(item)},
        )


class TooManyFailedAttempts(HTTPException):
    """429: too many failed credential checks from this address or for this key id."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            status_code=429,
            detail="too many failed authentication attempts from this client or for this "
            f"API key; retry in {retry_after_s} seconds",
            headers={"Retry-After": str(retry_after_s)},
        )


def _policy(item: RateLimitItem) -> str:
    return f"{item.amount};w={item.get_expiry()}"


class _Limiter:
    def __init__(self, client: redis.Redis, names: StreamNames, spec: str) -> None:
        self.items: list[RateLimitItem] = parse_many(spec) if spec.strip() else []
        self.storage: RedisStorage | RedisClusterStorage
        if is_cluster_client(client):
            # the cluster's seed node (the client may not have connected yet)
            seeds: Any = client.nodes_manager.startup_nodes  # type: ignore[attr-defined]
            node = next(iter(seeds.values()))
            self.storage = RedisClusterStorage(
                f"async+redis+cluster://{node.host}:{node.port}",
                implementation="redispy",
                key_prefix=names.key("ratelimit"),
            )
        else:
            self.storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=names.key("ratelimit"),
                connection_pool=client.connection_pool,  # type: ignore[arg-type]
            )
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)

    async def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = await self.strategy.get_window_stats(item, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))


def rate_limit_identity(principal: Principal) -> str:
    """What names a credential in its rate-limit keys: an API key's id (16 hex digits),
    or a digest of a JWT's credential id (it holds the token's ``sub`` claim text)."""
    if principal.kind == "api_key":
        return principal.credential_id
    return "jwt:" + hashlib.sha256(principal.credential_id.encode()).hexdigest()[:32]


class CredentialRateLimiter(_Limiter):
    async def check(self, principal: Principal) -> None:
        """Count one request of ``principal``; ``RateLimited`` (429) when a limit is hit."""
        identity = rate_limit_identity(principal)
        for item in self.items:
            if not await self.strategy.hit(item, "credential", identity):
                raise RateLimited(item, await self._retry_after(item, "credential", identity))


class FailedAuthLimiter(_Limiter):
    """Failed credential checks, counted per client address and per API key id
    (``EMBEDSTREAM_AUTH_FAILURE_LIMIT``). ``check`` refuses (429) an expensive check
    once either is over its limit; ``failed`` counts a failure and refuses when that
    failure was one too many."""

    @staticmethod
    def _subjects(address: str, key_id: str | None) -> list[tuple[str, str]]:
        subjects = [("address", address)]
        if key_id is not None:
            subjects.append(("key", key_id))
        return subjects

    async def check(self, address: str, key_id: str | None = None) -> None:
        for item in self.items:
            for subject in self._subjects(address, key_id):
                if not await self.strategy.test(item, "authfail", *subject):
                    raise TooManyFailedAttempts(await self._retry_after(item, "authfail", *subject))

    async def failed(self, address: str, key_id: str | None = None) -> None:
        refused: int | None = None
        for item in self.items:
            for subject in self._subjects(address, key_id):
                if not await self.strategy.hit(item, "authfail", *subject):
                    retry = await self._retry_after(item, "authfail", *subject)
                    refused = max(refused or 0, retry)
        if refused is not None:
            raise TooManyFailedAttempts(refused)
