"""deploy/k8s: both trees render with `kubectl kustomize`; every rendered object passes
`kubernetes-validate --strict` (the Kubernetes schemas), the KEDA objects pass KEDA's CRD
schema (from the cloudcoil-models-keda package, made strict: unknown fields are errors),
and the settings an operator relies on hold: probes on the health port, resources, grace
above the drain timeout, a PDB per Deployment, one ScaledObject per stage that scales
from zero on lag and stays up while entries are pending."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from embedstream.streams.names import StreamNames
from tests.deploy.tools import ROOT, run, tool

K8S = ROOT / "deploy" / "k8s"
STAGES = {"embed": 0, "index": 1, "persist": 2}  # index into StreamNames.stage_groups()
REDIS_STREAMS_METADATA = {
    # the redis-streams scaler's documented metadata keys (KEDA 2.12+)
    "address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv",
    "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
    "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl",
    "databaseIndex",
}  # fmt: skip


def render(tree: str) -> list[dict[str, Any]]:
    done = run(tool("kubectl"), "kustomize", str(K8S / tree))
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def config_env() -> dict[str, str]:
    lines = (K8S / "base" / "config.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module")
def keda_docs() -> list[dict[str, Any]]:
    return render("keda")


@pytest.mark.parametrize("tree", ["base", "keda", "keda-cluster"])
def test_kubernetes_objects_pass_the_kubernetes_schemas(tree: str, tmp_path: Path) -> None:
    docs = [d for d in render(tree) if not d["apiVersion"].startswith("keda.sh/")]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    done = run(tool("kubernetes-validate"), "--strict", "--quiet", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "Job"} <= kinds


def strict_schema(model: Any) -> dict[str, Any]:
    """The CRD model's JSON schema with every object closed to unknown fields."""

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    schema: dict[str, Any] = model.model_json_schema(by_alias=True)
    close(schema)
    return schema


def test_keda_objects_pass_the_keda_crd_schema(keda_docs: list[dict[str, Any]]) -> None:
    try:
        from cloudcoil.models.keda import v1alpha1 as keda
    except ImportError:
        pytest.fail("cloudcoil-models-keda is not installed (the dev extra has it)")
    objects = [d for d in keda_docs if d["apiVersion"] == "keda.sh/v1alpha1"]
    assert sorted(d["kind"] for d in objects) == ["ScaledObject"] * 3 + ["TriggerAuthentication"]
    for doc in objects:
        schema = strict_schema(getattr(keda, doc["kind"]))
        jsonschema.validate(doc, schema)
        # the check is strict: a misspelt field fails it
        broken = copy.deepcopy(doc)
        broken["spec"]["minReplicaCout"] = 0
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


def test_each_stage_scales_from_zero_on_lag_and_stays_up_while_entries_are_pending(
    keda_docs: list[dict[str, Any]],
) -> None:
    config = config_env()
    groups = StreamNames(config["EMBEDSTREAM_STREAM_PREFIX"]).stage_groups()
    scaled = by_kind(keda_docs, "ScaledObject")
    deployments = by_kind(keda_docs, "Deployment")
    assert set(scaled) == {f"worker-{stage}" for stage in STAGES}
    for stage, index in STAGES.items():
        spec = scaled[f"worker-{stage}"]["spec"]
        assert spec["scaleTargetRef"]["name"] == f"worker-{stage}"
        assert f"worker-{stage}" in deployments
        assert "replicas" not in deployments[f"worker-{stage}"]["spec"], "KEDA owns replicas"
        assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
        triggers = {t["name"]: t for t in spec["triggers"]}
        assert set(triggers) == {"lag", "pending"}
        for trigger in triggers.values():
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert set(meta) <= REDIS_STREAMS_METADATA, set(meta) - REDIS_STREAMS_METADATA
            assert (meta["stream"], meta["consumerGroup"]) == groups[index]
            assert meta["addressFromEnv"] in config
            assert trigger["authenticationRef"]["name"] == "embedstream-redis"
        lag, pending = triggers["lag"]["metadata"], triggers["pending"]["metadata"]
        # KEDA reads lagCount first when both are in one trigger: they must be apart
        assert "pendingEntriesCount" not in lag and "lagCount" not in pending
        assert lag["activationLagCount"] == "0", "one waiting entry wakes the stage"
        assert int(lag["lagCount"]) > 0 and int(pending["pendingEntriesCount"]) > 0
    auth = by_kind(keda_docs, "TriggerAuthentication")["embedstream-redis"]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert (ref["parameter"], ref["name"]) == ("password", "embedstream-secrets")
    secret = yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())
    assert ref["key"] in secret["stringData"]


def pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return containers


def test_workloads_have_probes_resources_and_a_non_root_user() -> None:
    docs = render("base")
    config = config_env()
    drain = float(config["EMBEDSTREAM_DRAIN_TIMEOUT_S"])
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"api", "worker-embed", "worker-index", "worker-persist", "exporter"}
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        (container,) = pod_containers(deployment)
        refs = {next(iter(source.values()))["name"] for source in container["envFrom"]}
        assert refs == {config_map_name(docs), "embedstream-secrets"}
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"]
        assert resources["limits"]["memory"]
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["path"] in ("/healthz", "/readyz"), name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if name.startswith("worker-"):
            assert container["command"] == ["embedstream", "worker", name.removeprefix("worker-")]
            assert ports["health"] == int(config["EMBEDSTREAM_HEALTH_PORT"])
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert pod["terminationGracePeriodSeconds"] > drain + 5
        elif name == "exporter":
            assert container["command"][:2] == ["embedstream", "exporter"]
            assert str(ports["metrics"]) in container["command"]
        else:
            assert ports["http"] == int(config["EMBEDSTREAM_PORT"])
        assert (
            deployment["spec"]["selector"]["matchLabels"]
            == (pdbs[name]["spec"]["selector"]["matchLabels"])
        ), f"{name} has no PodDisruptionBudget"
    (job,) = by_kind(docs, "Job").values()
    assert pod_containers(job)[0]["command"] == ["embedstream", "migrate"]
    # every workload is scraped on the port that serves its /metrics; the queue gauges
    # come from the exporter alone (the API has replicas)
    for name, deployment in deployments.items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        (container,) = pod_containers(deployment)
        served = {p["containerPort"] for p in container["ports"]}
        assert annotations["prometheus.io/scrape"] == "true", name
        assert int(annotations["prometheus.io/port"]) in served, name
        assert annotations["prometheus.io/path"] == "/metrics", name
    assert deployments["api"]["spec"]["replicas"] > 1
    assert config["EMBEDSTREAM_METRICS_QUEUES"] == "false"
    assert deployments["exporter"]["spec"]["replicas"] == 1
    service = by_kind(docs, "Service")["api"]
    assert service["spec"]["selector"] == deployments["api"]["spec"]["selector"]["matchLabels"]


def config_map_name(docs: list[dict[str, Any]]) -> str:
    (name,) = by_kind(docs, "ConfigMap")
    return name


def test_the_example_secret_is_a_valid_secret_kept_out_of_the_tree(tmp_path: Path) -> None:
    done = run(tool("kubernetes-validate"), "--strict", "--quiet",
               str(K8S / "base" / "secret.example.yaml"))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert not by_kind(render("keda"), "Secret"), "applying the tree must not overwrite it"
