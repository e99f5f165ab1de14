"""The local Redis Cluster harness (``bench.redis_cluster``), shared with the benchmark
like ``bench.stack``."""

from bench.redis_cluster import ClusterNode, LocalRedisCluster, sync_client

__all__ = ["ClusterNode", "LocalRedisCluster", "sync_client"]
