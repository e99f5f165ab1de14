"""Redis failures: which ones waiting or retrying fixes, and Redis' own error codes.

Classified by exception class; where redis-py has no class of its own (a group that
does not exist, or exists already), by the error code Redis puts first in its reply.
"""

from __future__ import annotations

from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CLIENT_RETRIES: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
)
"""What the client retries at once, a few times: a brief connection loss, a server still
loading its data (``embedstream.adapters.redis_client``)."""

TRANSIENT: tuple[type[Exception], ...] = (*CLIENT_RETRIES, OSError)
"""What the stream runtime waits out with backoff, however long: Redis (or the network
to it) is away, restarting or loading."""

UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,  # includes BusyLoadingError (server still loading its data)
    RedisTimeoutError,
    ReadOnlyError,  # a replica after a failover
    OutOfMemoryError,  # maxmemory reached
)
"""What the ingress answers 503 for: "not now" rather than "this request is wrong"."""


def is_nogroup(exc: ResponseError) -> bool:
    """NOGROUP, or "no such key" (what XINFO answers when the stream is missing)."""
    text = str(exc)
    return text.startswith("NOGROUP") or text.startswith("no such key")


def is_busygroup(exc: ResponseError) -> bool:
    """BUSYGROUP: the consumer group exists already."""
    return str(exc).startswith("BUSYGROUP")
