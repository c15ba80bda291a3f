"""The deployment files are valid, and every service they name also runs without Docker."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose is installed by `make test`"
)
def test_docker_compose_file_is_valid_and_requires_its_secrets() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "services.cli", "secrets", "generate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    secrets_env = dict(line.split("=", 1) for line in generated.splitlines())
    assert set(secrets_env) == {
        "ROAC_LINK_KEYS",
        "ROAC_WEBHOOK_SIGNING_KEY",
        "ROAC_ERASURE_KEY",
        "ROAC_CONSOLE_SESSION_KEY",
    }
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("ROAC_")}
    result = subprocess.run(
        ["docker-compose", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean_env, **secrets_env},
    )
    assert result.returncode == 0, result.stderr
    # Without them compose refuses to start anything, naming what to do.
    missing = subprocess.run(
        ["docker-compose", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env,
    )
    assert missing.returncode != 0
    assert "roac secrets generate" in missing.stderr


def test_every_roac_service_in_compose_is_a_roac_command() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = {
        name: spec["command"]
        for name, spec in compose["services"].items()
        if spec.get("image") == "roac:local"
    }
    assert commands == {
        "migrate": ["roac", "migrate"],
        "ingest": ["roac", "ingest"],
        "matcher": ["roac", "matcher"],
        "notifier": ["roac", "notifier"],
        "console": ["roac", "console"],
    }
    for args in commands.values():
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", args[1], "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


PROMETHEUS = ROOT / "deploy" / "prometheus"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool comes with Debian's prometheus package"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )


@needs_promtool
def test_prometheus_configuration_and_alert_rules_are_valid() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        result = _promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_rules_fire_when_they_should_and_only_then() -> None:
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case["alert_rule_test"]}
    assert {r["alert"] for r in rules} == tested


def test_the_grafana_dashboard_uses_a_datasource_variable_defaulting_to_prometheus() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "roac.json").read_text())
    source = yaml.safe_load(
        (
            ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
        ).read_text()
    )["datasources"][0]
    # The datasource is a variable, so the dashboard imports into any Grafana; its default is
    # the provisioned Prometheus.
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    assert variable["current"]["value"] == source["uid"]
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${" + variable["name"] + "}"
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])


def test_the_grafana_dashboard_has_a_console_row() -> None:
    """Requests by route and status and the p95 latency of the console's pages, on the
    metrics the console exports (services/console/metrics.py)."""
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "roac.json").read_text())
    console = [p for p in dashboard["panels"] if p["title"].startswith("Console")]
    exprs = " ".join(t["expr"] for p in console for t in p["targets"])
    assert "sum by (route, status) (rate(roac_console_requests_total" in exprs
    assert "histogram_quantile(0.95" in exprs and "roac_console_request_seconds_bucket" in exprs
    assert len({p["gridPos"]["y"] for p in console}) == 1  # one row
    metrics = (ROOT / "services" / "console" / "metrics.py").read_text()
    for name in re.findall(r"roac_console_\w+", exprs):
        assert f'"{name.removesuffix("_bucket")}"' in metrics, name


def _k8s_documents() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_kubernetes_manifests_validate() -> None:
    import kubernetes_validate

    for doc in _k8s_documents():
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_kubernetes_deployments_scale_and_probe() -> None:
    docs = _k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"roac-ingest", "roac-matcher", "roac-notifier", "roac-console"}
    assert deployments["roac-matcher"]["spec"]["replicas"] >= 2
    for deployment in deployments.values():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    [rabbitmq] = [d for d in docs if d["kind"] == "StatefulSet"]
    assert rabbitmq["spec"]["replicas"] == 3
    [postgres] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "postgres"]
    assert postgres["spec"]["type"] == "ExternalName"


def test_the_shipped_migrate_steps_set_the_parking_policy_through_the_management_api() -> None:
    """docker-compose.yml and deploy/k8s name RabbitMQ's management API for `roac migrate`
    (the roac image has no rabbitmqctl): without it the parking queues would stay unbounded,
    and with it a policy that cannot be set fails the step (shared/parking.py)."""
    from urllib.parse import urlsplit

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    migrate = compose["migrate"]
    url = urlsplit(migrate["environment"]["ROAC_RABBITMQ_MANAGEMENT_URL"])
    assert (url.hostname, url.port) == ("rabbitmq", 15672)
    assert compose["rabbitmq"]["image"].endswith("-management")
    assert "15672:15672" in compose["rabbitmq"]["ports"]
    assert migrate["depends_on"]["rabbitmq"]["condition"] == "service_healthy"

    docs = _k8s_documents()
    [job] = [d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "roac-migrate"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    url = urlsplit(env["ROAC_RABBITMQ_MANAGEMENT_URL"])
    [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "rabbitmq"]
    assert url.hostname == f"rabbitmq.{service['metadata']['namespace']}.svc.cluster.local"
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    [config] = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rabbitmq-config"
    ]
    assert "rabbitmq_management" in config["data"]["enabled_plugins"]
