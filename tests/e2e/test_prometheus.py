"""A real Prometheus (Debian's binary) scrapes the running services and RabbitMQ; every query of
the Grafana dashboard and every alert's signal must return data, and every service's metrics
must pass `promtool check metrics`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import Stack, new_person, run_id
from tests.support.infra import free_port
from tests.support.processes import ServiceProcess, run_roac

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus package"),
]

ROOT = Path(__file__).resolve().parents[2]
COMPARISON = re.compile(r"\s*(>|<|==|!=|>=|<=)\s*[0-9.e+-]+\s*$")


def _queries() -> dict[str, str]:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/roac.json").read_text())
    found = {
        f"dashboard: {panel['title']} [{target['refId']}]": target["expr"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
    }
    for group in yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            # The alert's signal: its expression without the final threshold.
            found[f"alert: {rule['alert']}"] = COMPARISON.sub("", " ".join(rule["expr"].split()))
    return found


OPERATOR, PASSWORD = "prometheus@example.org", "a long enough passphrase"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _roac(env: dict[str, str], *args: str) -> str:
    result = run_roac(env, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def console(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The console beside the stack, as deploy/prometheus/prometheus.yml scrapes it."""
    scopes = ("rounds:read", "rounds:write", "intros:read", "contacts:read", "resources:read")
    key = _roac(
        stack.env,
        "keys",
        "create",
        f"console-{run_id()}",
        *[arg for scope in scopes for arg in ("--scope", scope)],
        "--source",
        "*",
    )
    port = free_port()
    env = {
        **stack.env,
        "ROAC_CONSOLE_PORT": str(port),
        "ROAC_CONSOLE_API_KEY": key,
        "ROAC_CONSOLE_INGEST_URL": stack.ingest_url,
        "ROAC_CONSOLE_MATCHER_URL": stack.matcher_url,
        "ROAC_CONSOLE_NOTIFIER_URL": stack.notifier_url,
    }
    _roac(env, "operators", "create", OPERATOR, "--password", PASSWORD)
    url = f"http://127.0.0.1:{port}"
    process = ServiceProcess(
        "console", env, f"{url}/readyz", tmp_path_factory.mktemp("console-logs")
    )
    process.start()
    try:
        yield url
    finally:
        process.stop()


def _use_the_console(url: str) -> None:
    """What an operator's morning produces in the console's metrics: a wrong password and a
    sign-in, a pool the matcher refuses (an action refused), a round that does not exist (an
    API failure)."""
    with httpx.Client(base_url=url, timeout=15) as browser:
        for password in ("not the password", PASSWORD):
            token = CSRF.search(browser.get("/sign-in").text)
            assert token, "no sign-in form"
            browser.post(
                "/sign-in",
                data={"csrf_token": token[1], "email": OPERATOR, "password": password},
            )
        form = browser.get("/pools/edit")
        assert form.status_code == 200, "not signed in"
        token = CSRF.search(form.text)
        assert token
        refused = browser.post(
            "/pools", data={"csrf_token": token[1], "name": "Not A Name", "do": "save"}
        )
        assert refused.status_code == 422
        assert browser.get(f"/rounds/{uuid.uuid4()}").status_code == 404


@pytest.fixture(scope="module")
def prometheus(
    stack: Stack, console: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(ROOT / "deploy/prometheus/alerts.yml")]
    targets = {
        "roac-ingest": stack.ingest_url,
        "roac-matcher": stack.matcher_url,
        "roac-notifier": stack.notifier_url,
        "roac-console": console,
        "rabbitmq": "http://127.0.0.1:15692",
        "rabbitmq-queues": "http://127.0.0.1:15692",
    }
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]].removeprefix("http://")]}]
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(directory / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (directory / "prometheus.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _introduce_a_pair(stack: Stack) -> None:
    run = run_id()
    people = [new_person(run, i) for i in range(6)]  # four bystanders keep the topic rare
    with stack.client() as client:
        client.post("/v1/contacts", json={"items": people})
        for person in people[:2]:
            client.post(
                "/v1/interests",
                json={
                    "source": "e2e",
                    "external_id": person["external_id"],
                    "topic": f"prom {run}",
                },
            )
    assert stack.sink.wait_for(people[0]["email"], within=10)


def test_every_dashboard_and_alert_query_returns_data(
    stack: Stack, console: str, prometheus: str
) -> None:
    _use_the_console(console)
    _introduce_a_pair(stack)
    time.sleep(4)  # a few scrapes before and after the traffic
    _introduce_a_pair(stack)
    queries = _queries()
    deadline = time.monotonic() + 30
    while True:
        empty = []
        for name, query in queries.items():
            response = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}).json()
            assert response["status"] == "success", (name, response)
            if not response["data"]["result"]:
                empty.append(name)
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert empty == []
    targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
    assert {t["health"] for t in targets} == {"up"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian's prometheus package")
def test_every_service_exposes_metrics_promtool_accepts(stack: Stack) -> None:
    for url in (stack.ingest_url, stack.matcher_url, stack.notifier_url):
        metrics = httpx.get(f"{url}/metrics").text
        result = subprocess.run(
            ["promtool", "check", "metrics"],
            input=metrics,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, f"{url}: {result.stdout}{result.stderr}"
        assert "roac_db_pool_connections" in metrics
