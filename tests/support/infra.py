"""Isolated test infrastructure on the machine's real RabbitMQ and PostgreSQL: a vhost and a
database per test session, so tests never touch a running `roac up` stack or each other."""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

from shared.migrations import drop_database
from shared.secret_policy import new_secret
from shared.settings import Settings

AMQP_BASE = "amqp://guest:guest@127.0.0.1:5672/"
PG_BASE = "postgresql://postgres@127.0.0.1:5432/"
# Fresh per test run, as an operator's would be: the services refuse placeholder secrets.
API_KEY = new_secret()
LINK_KEY = new_secret()
WEBHOOK_SIGNING_KEY = new_secret()
ERASURE_KEY = new_secret()
CONSOLE_SESSION_KEY = new_secret()


# Listening ports for the services under test come from below Linux's ephemeral range
# (32768-60999), which the kernel hands out as the source port of every outgoing connection
# (to PostgreSQL, RabbitMQ, the services themselves) and to any bind to port 0: a port chosen
# there can be taken between choosing it and the service binding it. Each port is handed out
# once per test process.
_LISTEN_PORTS = range(20_000, 32_000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, not handed out before by this process."""
    for _ in range(1_000):
        port = random.choice(_LISTEN_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port to listen on between 20000 and 32000")


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@dataclass(frozen=True)
class Infra:
    vhost: str
    database: str

    @property
    def amqp_url(self) -> str:
        return AMQP_BASE + quote(self.vhost, safe="")

    @property
    def database_url(self) -> str:
        return PG_BASE + self.database

    def env(self, **overrides: str | int) -> dict[str, str]:
        values: dict[str, str | int] = {
            "ROAC_AMQP_URL": self.amqp_url,
            "ROAC_DATABASE_URL": self.database_url,
            "ROAC_API_KEYS": f"test:{API_KEY}",
            "ROAC_LINK_KEYS": f"t1:{LINK_KEY}",
            "ROAC_LOG_LEVEL": "INFO",
            "ROAC_WEBHOOK_SIGNING_KEY": WEBHOOK_SIGNING_KEY,
            "ROAC_ERASURE_KEY": ERASURE_KEY,
            "ROAC_CONSOLE_SESSION_KEY": CONSOLE_SESSION_KEY,
            # The fake providers listen on 127.0.0.1 over plain HTTP: an explicit opt-in.
            "ROAC_OUTBOUND_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
            "ROAC_OUTBOUND_ALLOW_HTTP": "true",
        }
        # The notifier's public pages listen on a port of their own (links in messages).
        public_port = free_port()
        values["ROAC_NOTIFIER_PUBLIC_PORT"] = public_port
        values["ROAC_PUBLIC_URL"] = f"http://127.0.0.1:{public_port}"
        values.update(overrides)
        return {k: str(v) for k, v in values.items()}

    def settings(self, **overrides: str | int) -> Settings:
        fields = {k.removeprefix("ROAC_").lower(): v for k, v in self.env(**overrides).items()}
        return Settings(**fields)  # type: ignore[arg-type]


@contextmanager
def isolated_infra(label: str) -> Iterator[Infra]:
    suffix = uuid.uuid4().hex[:8]
    infra = Infra(vhost=f"roac-test-{label}-{suffix}", database=f"roac_test_{label}_{suffix}")
    _rabbitmqctl("add_vhost", infra.vhost)
    _rabbitmqctl("set_permissions", "-p", infra.vhost, "guest", ".*", ".*", ".*")
    try:
        yield infra
    finally:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", infra.vhost], capture_output=True, timeout=120
        )
        asyncio.run(drop_database(infra.database_url))
