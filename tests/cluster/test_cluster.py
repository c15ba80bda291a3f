"""A 3-node RabbitMQ cluster on this machine (separate node names and ports), the pipeline on
quorum queues replicated across it, and the node leading the queues stopped mid-stream:
nothing accepted is lost, nothing is introduced twice. Opt-in: `make test-cluster`."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.database import migrate
from shared.broker import make_broker
from shared.topology import declare_topology
from tests.e2e.conftest import Stack
from tests.faults.conftest import Workload, wait_ready
from tests.support.infra import free_port, isolated_infra
from tests.support.processes import ServiceProcess
from tests.support.smtp_sink import smtp_sink

pytestmark = pytest.mark.cluster


@dataclass
class Node:
    name: str
    port: int
    base: Path

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 20000),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "pid"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
        }

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.node, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def start(self) -> None:
        (self.base / "log").mkdir(parents=True, exist_ok=True)
        (self.base / "mnesia").mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        # Our own config file: the machine's sets the default node's 5672 listener.
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
        )
        shutil.chown(self.base, "rabbitmq", "rabbitmq")
        for path in self.base.rglob("*"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env(), check=True, timeout=60)
        deadline = time.monotonic() + 120
        # await_startup answers at once while the node is not reachable yet: ask until it is.
        while self.ctl("await_startup", "--timeout", "60", check=False).returncode != 0:
            assert time.monotonic() < deadline, (self.base / "log").iterdir()
            time.sleep(1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[Node]]:
    if shutil.which("rabbitmq-server") is None:
        pytest.skip("needs RabbitMQ installed")
    base = Path(tempfile.mkdtemp(prefix="roac-cluster-"))
    os.chmod(base, 0o755)  # noqa: S103 - the rabbitmq user must reach the node directories
    # AMQP ports 5781-5783, distribution ports 25781-25783 (an ephemeral port + 20000 could
    # pass 65535).
    nodes = [Node(f"roac-c{i}", 5780 + i, base / f"c{i}") for i in range(1, 4)]
    try:
        for node in nodes:
            node.start()
        for node in nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", nodes[0].node)
            node.ctl("start_app")
        status = nodes[0].ctl("cluster_status", "--formatter", "json").stdout
        assert all(node.node in status for node in nodes), status
        yield nodes
    finally:
        for node in nodes:
            node.ctl("stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_losing_the_leading_node_mid_stream_loses_nothing(
    cluster: list[Node], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    first, second, _ = cluster
    with isolated_infra("cluster") as infra, smtp_sink() as sink:
        settings = infra.settings(ROAC_AMQP_URL=first.url)
        asyncio.run(migrate(settings))

        async def declare_on_first() -> None:
            # Declared through the first node, whose quorum queues it therefore leads.
            broker = make_broker(settings, service="test")
            await broker.connect()
            await declare_topology(broker)
            await broker.stop()

        asyncio.run(declare_on_first())
        queues = first.ctl("list_queues", "name", "type", "leader", "members").stdout
        assert "quorum" in queues and first.node in queues

        ports = {"ingest": free_port(), "matcher": free_port(), "notifier": free_port()}
        env = infra.env(
            ROAC_AMQP_URL=second.url,  # the services talk to the node that stays up
            ROAC_INGEST_PORT=ports["ingest"],
            ROAC_MATCHER_PORT=ports["matcher"],
            ROAC_NOTIFIER_METRICS_PORT=ports["notifier"],
            ROAC_SMTP_PORT=sink.port,
            ROAC_INTRO_MODE="direct",
            ROAC_MATCH_MIN_SCORE="0.1",
            ROAC_QUIET_HOURS_ENABLED="false",
        )
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        procs = {n: ServiceProcess(n, env, f"{urls[n]}/readyz", tmp_path) for n in ports}
        for name in ("matcher", "notifier", "ingest"):
            procs[name].start()
        stack = Stack(
            infra,
            sink,
            procs["ingest"],
            procs["matcher"],
            procs["notifier"],
            urls["ingest"],
            urls["matcher"],
            urls["notifier"],
            env,
        )
        workload = Workload(stack)
        try:
            workload.run_in_background()
            time.sleep(3)
            first.ctl("stop_app")  # the leader of every quorum queue goes away
            time.sleep(5)
            leaders = second.ctl("list_queues", "name", "leader").stdout
            assert first.node not in leaders, leaders  # new leaders were elected
            wait_ready(stack.processes)
            time.sleep(3)
            workload.stop()
            figures = workload.check()
            print(f"\ncluster node loss: {figures}")
        finally:
            workload.stop()
            for process in stack.processes:
                process.stop()
            first.ctl("start_app", check=False)
