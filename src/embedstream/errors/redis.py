"""Redis failures: which ones waiting or retrying fixes, and Redis' own error codes.

Classified by exception class; where redis-py has no class of its own (a group that
does not exist, or exists already), by the error code Redis puts first in its reply.
"""

from __future__ import annotations

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CLIENT_RETRIES: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
)
"""What the client retries at once, a few times: a brief connection loss, a server still
loading its data (``embedstream.adapters.redis_client``)."""

CLUSTER_FAILOVER: tuple[type[Exception], ...] = (
    ClusterDownError,  # CLUSTERDOWN: slots unserved while a replica is promoted
    TryAgainError,  # TRYAGAIN: keys of a slot being moved
    MasterDownError,  # MASTERDOWN: a replica lost its primary
    ReadOnlyError,  # READONLY: a write to a primary just demoted to a replica
    MovedError,  # MOVED after the client's redirections ran out
    SlotNotCoveredError,  # the client's slot map has no node for a slot (yet)
    ClusterError,  # redirections or retries exhausted
)
"""What a Redis Cluster answers while a failover is under way: waited out like an outage."""

TRANSIENT: tuple[type[Exception], ...] = (*CLIENT_RETRIES, *CLUSTER_FAILOVER, OSError)
"""What the stream runtime waits out with backoff, however long: Redis (or the network
to it) is away, restarting or loading."""

UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,  # includes BusyLoadingError (server still loading its data)
    RedisTimeoutError,
    ReadOnlyError,  # a replica after a failover
    OutOfMemoryError,  # maxmemory reached
    *CLUSTER_FAILOVER,
)
"""What the ingress answers 503 for: "not now" rather than "this request is wrong"."""


def is_nogroup(exc: ResponseError) -> bool:
    """NOGROUP, or "no such key" (what XINFO answers when the stream is missing)."""
    return str(exc).startswith("NOGROUP") or is_no_such_stream(exc)


FAILOVER_REPLIES = ("UNBLOCKED", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "LOADING")


def is_failover_reply(exc: ResponseError) -> bool:
    """A reply a primary gives while it is being demoted or a replica promoted (a blocked
    XREADGROUP is answered ``UNBLOCKED ... (master -> replica?)``): wait and retry.
    redis-py raises its own classes for some of them (``ClusterDownError`` reads "The
    cluster is down", without the code), so the class counts as much as the text."""
    return isinstance(exc, CLUSTER_FAILOVER) or str(exc).startswith(FAILOVER_REPLIES)


def is_no_such_stream(exc: ResponseError) -> bool:
    """What XINFO answers for a stream that does not exist (and nothing else: a
    cluster's CLUSTERDOWN during a failover is a ``ResponseError`` too, and says nothing
    about the stream)."""
    return str(exc).lower().startswith(("no such key", "err no such key"))


def is_busygroup(exc: ResponseError) -> bool:
    """BUSYGROUP: the consumer group exists already."""
    return str(exc).startswith("BUSYGROUP")
