"""KEDA triggers for a deployment's stream layout: ``embedstream keda``.

``deploy/k8s/keda`` scales each worker stage on one stream (a single Redis, one
partition). With ``EMBEDSTREAM_PARTITIONS=N`` a stage reads N streams, and on a Redis
Cluster their names carry hash tags (``{embedstream:p0}:ingest``) and KEDA needs its
cluster scaler (``redis-cluster-streams``). This module writes, for the layout the
settings describe, the kustomize patches that replace each ScaledObject's triggers:
per partition stream, a ``lag`` trigger (scale from zero) and a ``pending`` trigger (stay
up while entries are in flight), the same pair as the single-stream files.

KEDA's HPA follows the largest of a ScaledObject's triggers, not their sum: with N
partitions each stream holds about 1/N of the stage's work (the partition is a hash of
tenant and document id), so each partition's threshold is the single stream's divided by
N (rounded up), and the busiest partition asks for about what the whole stage needs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from embedstream.streams.names import StageNames, StreamNames

SINGLE_ADDRESS_ENV = "REDIS_ADDRESS"
"""config.env's ``host:port`` of a single Redis (the ``redis-streams`` scaler)."""
CLUSTER_ADDRESSES_ENV = "REDIS_ADDRESSES"
"""config.env's comma-separated ``host:port`` list of cluster nodes (``redis-cluster-streams``)."""
AUTHENTICATION = "embedstream-redis"


@dataclass(frozen=True)
class StageScaling:
    """Per replica, on one stream: waiting entries (lag) and entries in flight (pending)."""

    lag: int
    pending: int


SCALING = {
    # embedding is the slow stage (~30 passages/s per replica on 2 cores): one batch
    "embed": StageScaling(lag=100, pending=200),
    "index": StageScaling(lag=500, pending=200),
    "persist": StageScaling(lag=500, pending=200),
}
"""The thresholds of deploy/k8s/keda's ScaledObjects (one stream per stage)."""


def stage_triggers(names: StreamNames, stage: StageNames) -> list[dict[str, Any]]:
    """The triggers of ``worker-{stage}`` for ``names``' layout."""
    scaling = SCALING[stage.name]
    views = names.views()
    lag = math.ceil(scaling.lag / len(views))
    pending = math.ceil(scaling.pending / len(views))
    kind = "redis-cluster-streams" if names.cluster else "redis-streams"
    address = (
        {"addressesFromEnv": CLUSTER_ADDRESSES_ENV}
        if names.cluster
        else {"addressFromEnv": SINGLE_ADDRESS_ENV}
    )
    triggers: list[dict[str, Any]] = []
    for index, view in enumerate(views):
        stream = stage.stream_of(view)
        suffix = "" if len(views) == 1 else f"-p{index}"
        common = {**address, "stream": stream, "consumerGroup": stage.group}
        triggers.append(
            {
                "type": kind,
                "name": f"lag{suffix}",
                "metadata": {**common, "lagCount": str(lag), "activationLagCount": "0"},
                "authenticationRef": {"name": AUTHENTICATION},
            }
        )
        triggers.append(
            {
                "type": kind,
                "name": f"pending{suffix}",
                "metadata": {**common, "pendingEntriesCount": str(pending)},
                "authenticationRef": {"name": AUTHENTICATION},
            }
        )
    return triggers


def trigger_patch(names: StreamNames, stage: StageNames) -> list[dict[str, Any]]:
    """A JSON patch (RFC 6902) for ``worker-{stage}``'s ScaledObject: its triggers for
    ``names``' layout (kustomize ``patches: [{path: ..., target: ...}]``)."""
    return [{"op": "replace", "path": "/spec/triggers", "value": stage_triggers(names, stage)}]


def patch_file(stage: StageNames) -> str:
    return f"triggers-{stage.name}.json"
