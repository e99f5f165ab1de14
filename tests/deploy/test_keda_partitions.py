"""deploy/k8s/keda-cluster: KEDA on a Redis Cluster with 3 partitions. Its trigger
patches are what `embedstream keda` writes for that layout; rendered, every stage's
ScaledObject watches its group on every partition stream (the very names the workers
read) with the cluster scaler, passes KEDA's CRD schema, and every process is told the
layout. The same generator, for one partition on a single Redis, gives deploy/k8s/keda's
hand-written triggers: one source for both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from embedstream.deploy.keda import SCALING, stage_triggers
from embedstream.streams.names import PIPELINE, StreamNames
from tests.deploy.test_k8s import K8S, by_kind, config_env, render, strict_schema
from tests.deploy.tools import ROOT

REDIS_CLUSTER_STREAMS_METADATA = {
    # the redis-cluster-streams scaler's metadata keys (KEDA 2.12+)
    "addresses", "addressesFromEnv", "hosts", "hostsFromEnv", "ports", "portsFromEnv",
    "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
    "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl",
}  # fmt: skip
OVERLAY = K8S / "keda-cluster"


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render("keda-cluster")


def rendered_config(docs: list[dict[str, Any]]) -> dict[str, str]:
    [config] = [d for d in docs if d["kind"] == "ConfigMap"]
    data: dict[str, str] = config["data"]
    return data


def test_the_checked_in_patches_are_what_the_cli_writes(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EMBEDSTREAM_STREAM_PREFIX": config_env()["EMBEDSTREAM_STREAM_PREFIX"],
        "EMBEDSTREAM_PARTITIONS": "3",
        "EMBEDSTREAM_REDIS_CLUSTER": "true",
    }
    cli = [sys.executable, "-c", "from embedstream.cli import main; main()"]
    done = subprocess.run(
        [*cli, "keda", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in OVERLAY.glob("triggers-*.json"))
    assert len(written) == len(PIPELINE)
    for name in written:
        assert (tmp_path / name).read_text() == (OVERLAY / name).read_text(), name


def test_every_stage_scales_on_its_group_in_every_partition(docs: list[dict[str, Any]]) -> None:
    config = rendered_config(docs)
    assert (config["EMBEDSTREAM_PARTITIONS"], config["EMBEDSTREAM_REDIS_CLUSTER"]) == ("3", "true")
    names = StreamNames(config["EMBEDSTREAM_STREAM_PREFIX"], cluster=True, partitions=3)
    scaled = by_kind(docs, "ScaledObject")
    watched: set[tuple[str, str]] = set()
    for stage in PIPELINE:
        triggers = scaled[f"worker-{stage.name}"]["spec"]["triggers"]
        lags = [t for t in triggers if t["name"].startswith("lag")]
        pendings = [t for t in triggers if t["name"].startswith("pending")]
        assert len(lags) == len(pendings) == 3
        for trigger in triggers:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-cluster-streams"
            assert set(meta) <= REDIS_CLUSTER_STREAMS_METADATA, set(meta)
            assert meta["addressesFromEnv"] in config
            assert meta["consumerGroup"] == stage.group
            assert trigger["authenticationRef"]["name"] == "embedstream-redis"
            watched.add((meta["stream"], meta["consumerGroup"]))
        for lag in lags:
            assert lag["metadata"]["activationLagCount"] == "0"  # wakes from zero
            assert int(lag["metadata"]["lagCount"]) * 3 >= SCALING[stage.name].lag
            assert "pendingEntriesCount" not in lag["metadata"]
        for pending in pendings:
            assert "lagCount" not in pending["metadata"]
    # exactly the streams and groups the workers read, on every partition
    assert watched == set(names.stage_groups())
    assert all(stream.startswith("{") for stream, _ in watched)  # hash-tagged


def test_the_overlay_passes_the_keda_crd_schema(docs: list[dict[str, Any]]) -> None:
    from cloudcoil.models.keda import v1alpha1 as keda

    objects = [d for d in docs if d["apiVersion"] == "keda.sh/v1alpha1"]
    assert len(objects) == 4
    for doc in objects:
        jsonschema.validate(doc, strict_schema(getattr(keda, doc["kind"])))


def test_one_partition_on_a_single_redis_gives_the_base_keda_triggers() -> None:
    base = by_kind(render("keda"), "ScaledObject")
    names = StreamNames(config_env()["EMBEDSTREAM_STREAM_PREFIX"])
    for stage in PIPELINE:
        expected = base[f"worker-{stage.name}"]["spec"]["triggers"]
        assert json.loads(json.dumps(stage_triggers(names, stage))) == expected
