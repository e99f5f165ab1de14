"""deploy/prometheus and deploy/grafana: the rules pass `promtool check rules`, each alert
fires on the series that should raise it (`promtool test rules`), the Compose scrape
configuration is valid, and the rules and the dashboard read only series that embedstream
exports or that the recording rules define."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

from embedstream.metrics import http, runtime
from embedstream.metrics.embedder import EmbedderCollector
from embedstream.metrics.queues import QueueCollector
from embedstream.streams.status import ConsumerView, GroupView, StatusReport, StreamView
from tests.deploy.tools import ROOT, run
from tests.support.metrics import Scrape

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "embedstream.json"
RULES = [PROMETHEUS / "recording-rules.yml", PROMETHEUS / "alert-rules.yml"]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: Debian's prometheus package brings it "
            "(apt-get install prometheus, or scripts/setup.sh)",
            pytrace=False,
        )
    return found


def test_the_rules_pass_promtool_check() -> None:
    done = run(promtool(), "check", "rules", *map(str, RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_each_alert_fires_on_its_series_and_not_otherwise() -> None:
    done = run(promtool(), "test", "rules", str(PROMETHEUS / "tests" / "rules.test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_scrape_configuration_is_valid() -> None:
    done = run(promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert sorted(config["rule_files"]) == sorted(p.name for p in RULES)


def test_the_kubernetes_scrape_job_keeps_the_annotated_pods() -> None:
    # Debian's promtool is built without Kubernetes discovery: check the shape instead
    (job,) = yaml.safe_load((PROMETHEUS / "kubernetes-scrape.yml").read_text())["scrape_configs"]
    keep = job["relabel_configs"][0]
    assert keep["action"] == "keep" and keep["regex"] == "true"
    assert keep["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]


def exported_names() -> set[str]:
    """Every series name embedstream's processes expose."""
    report = StatusReport(
        prefix="p",
        streams=[
            StreamView(
                "p:ingest",
                1,
                True,
                [GroupView("g", 0, 0, None, "0-0", 0, [ConsumerView("c", 0, 0)], 0)],
            )
        ],
        dead_letter_stream="p:dlq",
        dead_letters_total=0,
    )

    class Encoder:
        name = "m"

        class stats:
            calls = chunks = tokens = padded_tokens = 0
            seconds = 0.0

    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(report, 1000))
    registry.register(EmbedderCollector(Encoder()))
    # the labelled families show samples once a child exists
    http.REQUESTS.labels("/", "GET", "200")
    http.DURATION.labels("/", "GET")
    http.DOCUMENTS_ACCEPTED.labels("upsert")
    runtime.ConsumerMetrics("s", "g")
    runtime.STORE_WRITE.labels("chroma", "ok")
    text = (generate_latest(REGISTRY) + generate_latest(registry)).decode()
    return Scrape.parse(text).names()


def queried_series(expr: str) -> set[str]:
    return set(re.findall(r"\b(embedstream[_:][a-z0-9_:]+)", expr))


def test_rules_and_dashboard_read_only_series_that_exist() -> None:
    groups = [g for path in RULES for g in yaml.safe_load(path.read_text())["groups"]]
    recorded = {rule["record"] for g in groups for rule in g["rules"] if "record" in rule}
    exprs = [rule["expr"] for g in groups for rule in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    known = exported_names() | recorded
    for expr in exprs:
        unknown = queried_series(expr) - known
        assert not unknown, f"{expr!r} reads series nothing exports: {unknown}"
    # the dashboard shows what the issue asks for
    dashboard_exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for series in (
        "embedstream:messages:rate1m",
        "embedstream:group_lag:max",
        "embedstream:group_oldest_pending_age_seconds:max",
        "embedstream:embed_chunks:rate1m",
        "embedstream:group_dead_letters:increase10m",
        "embedstream:http_request_duration_seconds:p99_5m",
        "embedstream:http_errors_5xx:ratio_rate5m",
    ):
        assert series in dashboard_exprs, series


def test_the_alerts_cover_the_failure_modes() -> None:
    (group,) = yaml.safe_load((PROMETHEUS / "alert-rules.yml").read_text())["groups"]
    alerts = {rule["alert"] for rule in group["rules"]}
    assert {
        "EmbedstreamLagGrowing",
        "EmbedstreamOldestPendingOverVisibility",
        "EmbedstreamDeadLetters",
        "EmbedstreamNoLiveConsumer",
        "EmbedstreamApiErrors",
    } <= alerts
    tested = (PROMETHEUS / "tests" / "rules.test.yml").read_text()
    for alert in alerts:
        assert f"alertname: {alert}" in tested, f"{alert} has no promtool test"


def test_setup_installs_promtool() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    # Debian's prometheus, through the script's one apt-get install
    assert re.search(r"apt_install .*\bprometheus\b", setup)
    assert 'apt-get install -y -qq "$@"' in setup
    assert Path(ROOT / "deploy" / "grafana" / "README.md").exists()
