"""Building the Redis client a process uses (never at module level), on a single Redis or
a Redis Cluster, and the two things that differ between them for the rest of the code:
running a Lua script inside a MULTI/EXEC (``queue_script``) and waiting for replicas
(``wait_for_replicas``).

Cluster mode (``RedisSettings.is_cluster``: ``EMBEDSTREAM_REDIS_CLUSTER=true`` or a
``redis+cluster://`` URL) uses redis-py's ``RedisCluster``. It discovers the cluster from
the URL's node, follows MOVED/ASK redirections and refreshes its slot map after a
failover. Every key embedstream uses carries one hash tag on a cluster
(``embedstream.streams.names``), so every script and transaction runs on one node,
atomically, as on a single Redis. ``RedisCluster`` is typed as ``redis.Redis`` for the
rest of the code: it offers the same command methods; where it differs (pipelines of
scripts, connection pools) the helpers below and ``is_cluster_client`` say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import SlotNotCoveredError

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
    XREADGROUP. On a cluster, ``max_connections`` bounds each node's pool."""
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3)
    if settings.is_cluster:
        cluster = RedisCluster.from_url(
            cluster_url(settings.redis_url),
            retry=retry,
            # a failover moves slots: re-read the slot map after a connection error
            # rather than insisting on the dead node
            cluster_error_retry_attempts=3,
            socket_connect_timeout=5,
            socket_timeout=socket_timeout,
            health_check_interval=30,
            **({"max_connections": max_connections} if max_connections else {}),
        )
        # XREADGROUP replies stay raw, as the runtime reads them on a single Redis
        # (``StreamConsumer.read_new``): redis-py's conversion builds a dict per entry,
        # as much work as decoding the envelopes. (The cluster's nodes share this map.)
        cluster.response_callbacks.pop("XREADGROUP", None)
        return cast(redis.Redis, cluster)
    return redis.Redis.from_url(
        settings.redis_url,
        retry=retry,
        retry_on_error=list(CLIENT_RETRIES),
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=socket_timeout,
        max_connections=max_connections,
    )


def cluster_url(url: str) -> str:
    """``redis+cluster://host:port/0`` as redis-py reads it (``redis://host:port``); the
    ``+cluster`` scheme is what ``limits`` and other tools use to name a cluster. A
    cluster has one database: the path is dropped."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.removesuffix("+cluster")
    host, _, _db = rest.partition("/")
    return f"{scheme}://{host}"


def is_cluster_client(client: object) -> bool:
    return isinstance(client, RedisCluster | ClusterPipeline)


def queue_script(script: AsyncScript, keys: Sequence[str], args: Sequence[Any], client: Any) -> Any:
    """Run (or, on a pipeline, queue) ``script``. redis-py refuses EVALSHA in a cluster
    pipeline; there the script goes as EVAL (its text, once per call). That is also the
    safe choice inside a cluster MULTI: a replica promoted by a failover has no script
    cache, and a NOSCRIPT inside EXEC would fail that one command while the others ran."""
    if isinstance(client, ClusterPipeline):
        return client.execute_command("EVAL", script.script, len(keys), *keys, *args)
    return script(keys=list(keys), args=list(args), client=client)


class ReplicationTimeout(Exception):
    """WAIT did not see a write on enough replicas in time."""

    def __init__(self, wanted: int, got: int, timeout_ms: int) -> None:
        super().__init__(
            f"the write reached {got} of the {wanted} replica(s) required "
            f"(EMBEDSTREAM_REDIS_MIN_REPLICAS_ACK) within {timeout_ms} ms: check the "
            "replicas' health and lag, or lower the setting"
        )
        self.wanted, self.got = wanted, got


@dataclass(frozen=True)
class ReplicaAck:
    """``EMBEDSTREAM_REDIS_MIN_REPLICAS_ACK`` and its timeout: how many replicas a write
    must reach before it is acknowledged (0: do not wait)."""

    replicas: int = 0
    timeout_ms: int = 1_000

    @classmethod
    def of(cls, settings: RedisSettings) -> ReplicaAck:
        return cls(settings.redis_min_replicas_ack, settings.redis_replicas_ack_timeout_ms)

    async def wait(self, client: redis.Redis, key: str) -> None:
        """Wait until what this process wrote to ``key``'s node is on enough replicas
        (``ReplicationTimeout`` otherwise); at once when no replica is required."""
        if self.replicas > 0:
            await wait_for_replicas(client, key, self.replicas, self.timeout_ms)


NO_REPLICA_ACK = ReplicaAck()


async def wait_for_replicas(client: redis.Redis, key: str, replicas: int, timeout_ms: int) -> int:
    """Block until what this process wrote so far to ``key``'s node is on ``replicas``
    replicas; ``ReplicationTimeout`` when it is not within ``timeout_ms``.

    WAIT counts the replicas that acknowledged the calling *connection's* last write,
    and a pooled client may have written on another connection. So this sends a write
    of its own (INCR of a counter key in ``key``'s hash slot, on the same node) and WAIT
    together, on one connection: replication offsets only grow, so the replicas that
    have the counter's INCR have every earlier write of that node too."""
    if replicas <= 0:
        return 0
    probe = f"{key}:replicated"
    if is_cluster_client(client):
        got = await _cluster_wait(cast(Any, client), probe, replicas, timeout_ms)
    else:
        async with client.pipeline(transaction=False) as pipe:
            pipe.incr(probe)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            _, got = await pipe.execute()
    got = int(got)
    if got < replicas:
        raise ReplicationTimeout(replicas, got, timeout_ms)
    return got


async def _cluster_wait(client: RedisCluster, probe: str, replicas: int, timeout_ms: int) -> int:
    """INCR + WAIT on one connection of the node that serves ``probe`` (a cluster
    pipeline would send WAIT, which names no key, to some other node)."""
    node = client.get_node_from_key(probe)
    if node is None:
        raise SlotNotCoveredError(f"no node serves the slot of {probe!r} (yet)")
    connection = node.acquire_connection()
    try:
        await connection.send_packed_command(
            connection.pack_commands([("INCR", probe), ("WAIT", replicas, timeout_ms)])
        )
        await connection.read_response()  # the INCR (a MOVED error raises here)
        got = await connection.read_response()
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        node.release(connection)
    return int(got)
