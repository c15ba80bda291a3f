"""The three services as separate processes against a real RabbitMQ vhost, a real PostgreSQL
database and an in-process aiosmtpd server, shared by the end-to-end tests of a session."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.database import migrate
from tests.support.infra import API_KEY, Infra, free_port, isolated_infra
from tests.support.processes import ServiceProcess
from tests.support.smtp_sink import SmtpSink, smtp_sink


@dataclass
class Stack:
    infra: Infra
    sink: SmtpSink
    ingest: ServiceProcess
    matcher: ServiceProcess
    notifier: ServiceProcess
    ingest_url: str
    matcher_url: str
    notifier_url: str
    env: dict[str, str]

    @property
    def processes(self) -> list[ServiceProcess]:
        return [self.ingest, self.matcher, self.notifier]

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {API_KEY}", **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.ingest_url, headers=headers, timeout=30, **kwargs)


@contextmanager
def running_stack(
    label: str, log_dir: Path, request: pytest.FixtureRequest, **env: str | int
) -> Iterator[Stack]:
    """The three services as processes on their own vhost and database, plus an SMTP sink."""
    with isolated_infra(label) as infra, smtp_sink() as sink:
        ports = {"ingest": free_port(), "matcher": free_port(), "notifier": free_port()}
        environment = infra.env(
            ROAC_INGEST_PORT=ports["ingest"],
            ROAC_MATCHER_PORT=ports["matcher"],
            ROAC_NOTIFIER_METRICS_PORT=ports["notifier"],
            ROAC_SMTP_PORT=sink.port,
            **env,
        )
        asyncio.run(migrate(infra.settings()))
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        procs = {
            name: ServiceProcess(name, environment, f"{urls[name]}/readyz", log_dir)
            for name in ports
        }
        try:
            for name in ("matcher", "notifier", "ingest"):
                procs[name].start()
        except BaseException:
            # One that would not start: stop those already running (no leftover process).
            for proc in procs.values():
                proc.stop()
            raise
        stack = Stack(
            infra,
            sink,
            procs["ingest"],
            procs["matcher"],
            procs["notifier"],
            urls["ingest"],
            urls["matcher"],
            urls["notifier"],
            environment,
        )
        failed_before = request.session.testsfailed
        try:
            yield stack
        finally:
            for proc in stack.processes:
                proc.stop()
            if request.session.testsfailed > failed_before:
                for proc in stack.processes:
                    print(f"\n----- {proc.name} log (last lines) -----\n{proc.tail(60)}")


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """Direct introductions (no asks): the pipeline as in the first issue."""
    with running_stack(
        "e2e", tmp_path_factory.mktemp("service-logs"), request, ROAC_INTRO_MODE="direct"
    ) as created:
        yield created


def zone_at(local_hour: int) -> str:
    """A fixed-offset zone where it is now `local_hour` o'clock (Etc/GMT-N is UTC+N)."""
    offset = (local_hour - datetime.now(UTC).hour) % 24
    if offset > 14:
        offset -= 24
    return f"Etc/GMT{-offset:+d}"


def new_person(run: str, index: int, **extra: Any) -> dict[str, Any]:
    """An invented person whose address is unique to this test run. They live where it is
    midday now: quiet hours stay on in these tests, and must not hold their mail whatever the
    hour the suite runs at."""
    return {
        "source": "e2e",
        "external_id": f"{run}-{index}",
        "name": f"Person {index} {run}",
        "email": f"p{index}.{run}@example.org",
        "organization": f"Org {index}",
        "timezone": zone_at(12),
        **extra,
    }


def run_id() -> str:
    return uuid.uuid4().hex[:8]
