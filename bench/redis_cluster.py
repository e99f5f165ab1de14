"""A real local Redis Cluster for tests and benchmarks: three primaries with one replica
each, every node a ``redis-server --cluster-enabled yes`` on a free port with its own
folder (AOF on), joined by ``redis-cli --cluster create --cluster-replicas 1
--cluster-yes``.

Synchronous on purpose (plain subprocesses and the sync client), so one cluster can be
a session-scoped fixture shared by async tests on their own event loops. The shared
Redis on 6379 is never touched. Tests that fail over or kill a node use their own
cluster (``RedisCluster.start`` in the test) so the shared one stays healthy.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import redis

from embedstream.adapters.redis_client import cluster_url

PRIMARIES = 3
REPLICAS_PER_PRIMARY = 1


@dataclass
class ClusterNode:
    port: int
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def role(self) -> str:
        with self.client() as client:
            info = client.info("replication")
        return str(info["role"])

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalRedisCluster:
    """Start with ``start(folder)``; ``url`` is what ``EMBEDSTREAM_REDIS_URL`` takes."""

    nodes: list[ClusterNode] = field(default_factory=list)
    appendonly: bool = True
    replicas: int = REPLICAS_PER_PRIMARY

    @property
    def url(self) -> str:
        seed = next(node for node in self.nodes if node.alive)
        return f"redis+cluster://127.0.0.1:{seed.port}/0"

    @classmethod
    def start(
        cls,
        folder: Path,
        within_s: float = 60,
        *,
        appendonly: bool = True,
        replicas: int = REPLICAS_PER_PRIMARY,
    ) -> LocalRedisCluster:
        """Start the nodes and join them; ``appendonly=False`` for benchmarks compared
        with a single Redis that runs without AOF; ``replicas`` per primary."""
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server and redis-cli must be on PATH (apt-get install redis)")
        cluster = cls(appendonly=appendonly, replicas=replicas)
        try:
            for index in range(PRIMARIES * (1 + replicas)):
                node_folder = folder / f"node-{index}"
                node_folder.mkdir(parents=True)
                node = ClusterNode(cluster_port({n.port for n in cluster.nodes}), node_folder)
                cluster._launch(server, node)
                cluster.nodes.append(node)
            for node in cluster.nodes:
                _wait_for(lambda n=node: _pings(n), within_s, f"node {node.address} to start")
            subprocess.run(
                [cli, "--cluster", "create", *(n.address for n in cluster.nodes),
                 "--cluster-replicas", str(replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=within_s,
            )  # fmt: skip
            cluster.wait_healthy(within_s)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _launch(self, server: str, node: ClusterNode) -> None:
        node.proc = subprocess.Popen(
            [server,
             "--port", str(node.port), "--bind", "127.0.0.1",
             "--dir", str(node.folder),
             "--cluster-enabled", "yes",
             "--cluster-config-file", str(node.folder / "nodes.conf"),
             "--cluster-node-timeout", "2000",
             "--appendonly", "yes" if self.appendonly else "no", "--save", "",
             "--daemonize", "no", "--logfile", str(node.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_healthy(self, within_s: float = 60) -> None:
        """Every live node says ``cluster_state:ok`` and every slot is served by a live
        primary whose replica is attached and online (its initial sync done)."""
        _wait_for(self._healthy, within_s, "the cluster to become healthy")

    def _healthy(self) -> bool:
        live = [node for node in self.nodes if node.alive]
        try:
            for node in live:
                with node.client() as client:
                    info = client.cluster("info")
                    if info.get("cluster_state") != "ok":
                        return False
            primaries = [node for node in live if node.role() == "master"]
            if len(primaries) != PRIMARIES:
                return False
            for node in primaries:
                with node.client() as client:
                    replication = client.info("replication")
                online = sum(
                    1
                    for name, value in replication.items()
                    if name.startswith("slave")
                    and isinstance(value, dict)
                    and value.get("state") == "online"
                )
                # every replica attached and done with its initial sync (WAIT counts
                # only those), unless a test has killed a node on purpose
                if online < self.replicas and len(live) == len(self.nodes):
                    return False
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False
        return True

    def primary_of(self, key: str) -> ClusterNode:
        """The node serving ``key``'s slot now."""
        with next(n for n in self.nodes if n.alive).client() as client:
            slot = int(client.cluster("keyslot", key))
            for start, end, primary, *_ in client.cluster("slots"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves {key!r}")

    def replica_of(self, primary: ClusterNode) -> ClusterNode:
        for node in self.nodes:
            if node is primary or not node.alive:
                continue
            with node.client() as client:
                info = client.info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == primary.port:
                return node
        raise LookupError(f"no live replica of {primary.address}")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL: no shutdown, no last replication."""
        if node.proc is not None and node.alive:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)

    def restart(self, node: ClusterNode, within_s: float = 60) -> None:
        """Start a stopped (killed) node again on its folder: it rejoins the cluster
        (as a replica of whoever took over its slots)."""
        server = shutil.which("redis-server")
        assert server is not None
        assert not node.alive
        self._launch(server, node)
        _wait_for(lambda: _pings(node), within_s, f"node {node.address} to restart")

    def failover(self, replica: ClusterNode, within_s: float = 60) -> None:
        """``CLUSTER FAILOVER`` on ``replica``: a coordinated switch (the primary stops
        taking writes, the replica catches up, then takes over)."""
        with replica.client() as client:
            client.execute_command("CLUSTER FAILOVER")
        _wait_for(lambda: replica.role() == "master", within_s, f"{replica.address} to take over")

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.alive:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        node.proc.kill()
                    node.proc.wait()

    def flush(self) -> None:
        for node in self.nodes:
            if node.alive and node.role() == "master":
                with node.client() as client:
                    client.flushall()


def sync_client(url: str) -> redis.Redis:
    """A synchronous client for ``url``: a cluster client for a ``redis+cluster://`` URL
    (typed as ``redis.Redis``, as embedstream's async factory does), else a plain one."""
    if url.split("://", 1)[0].endswith("+cluster"):
        return cast(redis.Redis, redis.RedisCluster.from_url(cluster_url(url)))
    return redis.Redis.from_url(url)


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too (so at most 55535)."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if port in taken or port + 10000 in taken:
            continue
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pings(node: ClusterNode) -> bool:
    try:
        with node.client() as client:
            return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False


def _wait_for(check: object, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while True:
        if callable(check) and check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)
