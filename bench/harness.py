"""Starting services for a benchmark on an isolated vhost and database (same helpers as the
end-to-end tests), and small measuring aids."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import mkdtemp

from services.database import migrate
from tests.support.infra import API_KEY, Infra, free_port, isolated_infra
from tests.support.processes import ServiceProcess


@dataclass
class BenchStack:
    infra: Infra
    env: dict[str, str]
    urls: dict[str, str]
    processes: dict[str, ServiceProcess]
    api_key: str = API_KEY


@contextmanager
def bench_stack(
    *services: str, smtp_port: int | None = None, **env: str | int
) -> Iterator[BenchStack]:
    """Migrate a fresh database and start the named services (not started: their queue fills)."""
    log_dir = Path(mkdtemp(prefix="roac-bench-"))
    with isolated_infra("bench") as infra:
        ports = {"ingest": free_port(), "matcher": free_port(), "notifier": free_port()}
        environment = infra.env(
            ROAC_INGEST_PORT=ports["ingest"],
            ROAC_MATCHER_PORT=ports["matcher"],
            ROAC_NOTIFIER_METRICS_PORT=ports["notifier"],
            ROAC_SMTP_PORT=smtp_port or free_port(),
            ROAC_LOG_LEVEL="WARNING",
            **env,
        )
        asyncio.run(migrate(infra.settings()))
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        processes = {
            name: ServiceProcess(name, environment, f"{urls[name]}/readyz", log_dir)
            for name in ports
        }
        stack = BenchStack(infra, environment, urls, processes)
        try:
            for name in services:
                processes[name].start()
            yield stack
        finally:
            for process in processes.values():
                process.stop()


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "n/a"


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def wait_until_quiet(
    busy_below: float = 0.15, quiet_for: float = 10.0, at_most: float = 300.0
) -> tuple[float, float]:
    """Wait until the machine's CPU use (all cores) stays under `busy_below` for `quiet_for`
    seconds, at most `at_most`; return (seconds waited, busy share of the last interval).

    A benchmark can leave work behind after its processes are gone (a vhost's queues being
    deleted, a dropped database, a checkpoint, autovacuum): the next figure must not pay for
    it. In the 2026-11-28 afternoon run every wait ended after the minimum 10 s."""
    started = time.monotonic()
    quiet_since = started
    busy_share = 1.0
    before = _cpu_times()
    while True:
        time.sleep(1.0)
        after = _cpu_times()
        busy, total = after[0] - before[0], after[1] - before[1]
        before = after
        busy_share = busy / total if total else 0.0
        now = time.monotonic()
        if busy_share >= busy_below:
            quiet_since = now
        if now - quiet_since >= quiet_for or now - started >= at_most:
            return now - started, busy_share
