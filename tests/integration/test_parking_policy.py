"""The parking policy `roac-parking` (shared/parking.py) on the machine's real RabbitMQ: `roac
migrate` sets it on its vhost, RabbitMQ shows it as the parking queues' effective policy, and
it bounds them as documented: past ROAC_PARKING_MAX_MESSAGES or ROAC_PARKING_MAX_BYTES only the
newest messages stay, and a message older than ROAC_PARKING_TTL_DAYS is gone. Where the policy
was asked for through ROAC_RABBITMQ_MANAGEMENT_URL and cannot be set, `roac migrate` fails.

A vhost of its own: the small bounds set here would drop other tests' parked messages."""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import aio_pika
import pytest

from shared.broker import make_broker
from shared.parking import POLICY_NAME, POLICY_PATTERN, POLICY_PRIORITY, policy_for_migrate
from shared.topology import (
    DEAD_LETTER_EXCHANGE,
    DELIVERY_QUEUE,
    MATCHER_QUEUE,
    NOTIFIER_QUEUE,
    declare_topology,
)
from tests.support.amqp import connect, drain
from tests.support.infra import Infra, free_port, isolated_infra
from tests.support.processes import run_roac

# rabbitmq_management's default port; this machine's broker may run without the plugin.
MANAGEMENT_PORT = 15672


@pytest.fixture(scope="module")
def infra() -> Iterator[Infra]:
    with isolated_infra("parking") as created:
        yield created


def _rabbitmqctl_json(*args: str) -> list[dict[str, object]]:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args, "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(result.stdout)
    assert isinstance(found, list)
    return found


def _policies(vhost: str) -> dict[str, dict[str, object]]:
    return {str(p["name"]): p for p in _rabbitmqctl_json("list_policies", "-p", vhost)}


def _policy_definition(policy: dict[str, object]) -> dict[str, object]:
    definition = policy["definition"]
    # rabbitmqctl's JSON gives the definition as an object, older versions as a JSON string.
    found = json.loads(definition) if isinstance(definition, str) else definition
    assert isinstance(found, dict)
    return found


def _migrate(infra: Infra, **bounds: str | int) -> subprocess.CompletedProcess[str]:
    """`roac migrate` as an operator runs it on the broker's machine (rabbitmqctl on PATH)."""
    return run_roac(infra.env(ROAC_RABBITMQ_MANAGEMENT_URL="", **bounds), "migrate")


async def _declare_topology(infra: Infra) -> None:
    """The queues as the services declare them (the parking queues among them)."""
    broker = make_broker(infra.settings(), service="test")
    await broker.connect()
    await declare_topology(broker)
    await broker.stop()


async def _park(infra: Infra, consumer: str, bodies: list[bytes]) -> None:
    """Park messages as RabbitMQ does: through the dead-letter exchange, with the consumer's
    queue as routing key, confirmed one by one (so their order is the parking order)."""
    connection = await connect(infra.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE.name)
        for body in bodies:
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await exchange.publish(message, routing_key=consumer)


async def _parked(infra: Infra, queue: str) -> list[bytes]:
    """Every message left in a parking queue, oldest first (read and removed)."""
    connection = await connect(infra.amqp_url)
    async with connection:
        channel = await connection.channel()
        parking = await channel.get_queue(queue, ensure=False)
        return [m.body for m in await drain(parking)]


async def test_migrate_sets_the_policy_and_a_full_parking_queue_keeps_only_the_newest(
    infra: Infra,
) -> None:
    result = _migrate(infra, ROAC_PARKING_MAX_MESSAGES=3)
    assert result.returncode == 0, result.stderr
    assert f"parking policy {POLICY_NAME} set with rabbitmqctl (vhost {infra.vhost})" in (
        result.stdout
    )

    policy = _policies(infra.vhost)[POLICY_NAME]
    assert policy["pattern"] == POLICY_PATTERN
    assert policy["apply-to"] == "queues"
    assert int(str(policy["priority"])) == POLICY_PRIORITY
    assert _policy_definition(policy) == {
        "message-ttl": 14 * 86_400 * 1000,
        "max-length": 3,
        "max-length-bytes": 512 * 1024 * 1024,
        "overflow": "drop-head",
    }

    await _declare_topology(infra)
    queues = {
        str(q["name"]): q
        for q in _rabbitmqctl_json("list_queues", "-p", infra.vhost, "name", "policy")
    }
    parking = {name: q for name, q in queues.items() if name.endswith(".dlq")}
    assert len(parking) == 4
    assert all(q["policy"] == POLICY_NAME for q in parking.values()), parking
    # The work queues are not bounded by it (theirs is reject-publish, in their arguments).
    assert all(q["policy"] in ("", None) for n, q in queues.items() if n not in parking)

    await _park(infra, MATCHER_QUEUE.name, [f"parked {n}".encode() for n in range(5)])
    assert await _parked(infra, MATCHER_QUEUE.dead_letter_queue) == [
        b"parked 2",
        b"parked 3",
        b"parked 4",
    ]


async def test_a_parking_queue_over_its_byte_bound_drops_its_oldest(infra: Infra) -> None:
    # The policy changes in place on queues that exist already.
    await _declare_topology(infra)
    outcome = await policy_for_migrate(
        infra.settings(
            ROAC_RABBITMQ_MANAGEMENT_URL="",
            ROAC_PARKING_MAX_MESSAGES=1000,
            ROAC_PARKING_MAX_BYTES=1024 * 1024,
        )
    )
    assert (outcome.applied, outcome.exit_code) == (True, 0), outcome.report
    assert _policy_definition(_policies(infra.vhost)[POLICY_NAME])["max-length-bytes"] == 1 << 20

    # Five of 300 KiB: the newest three fit in 1 MiB, four would not.
    bodies = [bytes([n]) * (300 * 1024) for n in range(5)]
    await _park(infra, NOTIFIER_QUEUE.name, bodies)
    assert await _parked(infra, NOTIFIER_QUEUE.dead_letter_queue) == bodies[2:]


async def test_a_parked_message_older_than_the_ttl_is_gone(infra: Infra) -> None:
    await _declare_topology(infra)
    # One second, written in days as the setting is.
    result = _migrate(infra, ROAC_PARKING_TTL_DAYS=str(1 / 86_400))
    assert result.returncode == 0, result.stderr
    assert _policy_definition(_policies(infra.vhost)[POLICY_NAME])["message-ttl"] == 1000

    await _park(infra, DELIVERY_QUEUE.name, [b"an old delivery job"])
    await asyncio.sleep(2.5)
    assert await _parked(infra, DELIVERY_QUEUE.dead_letter_queue) == []


def test_migrate_fails_when_the_policy_was_asked_for_and_cannot_be_set(infra: Infra) -> None:
    """The shipped deployments set ROAC_RABBITMQ_MANAGEMENT_URL: their services start only after
    migrate succeeds, so an API that does not answer must not look like success."""
    nobody = f"http://127.0.0.1:{free_port()}"
    result = run_roac(
        infra.env(ROAC_RABBITMQ_MANAGEMENT_URL=nobody, ROAC_RABBITMQ_MANAGEMENT_WAIT_SECONDS=1),
        "migrate",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "database is up to date" in result.stdout  # the database side is done
    assert f"parking policy {POLICY_NAME} NOT applied through the management API" in result.stderr


def _management_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", MANAGEMENT_PORT), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    not _management_answers(),
    reason="the broker's rabbitmq_management plugin is not enabled on this machine",
)
def test_migrate_sets_the_policy_through_the_management_api(infra: Infra) -> None:
    """As docker-compose.yml and deploy/k8s apply it: over HTTP, with the AMQP URL's user."""
    result = run_roac(
        infra.env(
            ROAC_RABBITMQ_MANAGEMENT_URL=f"http://127.0.0.1:{MANAGEMENT_PORT}",
            ROAC_PARKING_MAX_MESSAGES=7,
        ),
        "migrate",
    )
    assert result.returncode == 0, result.stderr
    assert "set through the management API" in result.stdout
    assert _policy_definition(_policies(infra.vhost)[POLICY_NAME])["max-length"] == 7


class _ManagementApi(http.server.BaseHTTPRequestHandler):
    """A management API that answers the policy PUT with the next status of `answers`."""

    answers: ClassVar[list[int]] = []
    seen: ClassVar[list[str]] = []

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(self.path)
        self.send_response(type(self).answers.pop(0))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def _management_api(*answers: int) -> Iterator[str]:
    _ManagementApi.answers, _ManagementApi.seen = list(answers), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ManagementApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


async def test_migrate_waits_for_a_management_api_still_starting(infra: Infra) -> None:
    # docker-compose starts migrate once RabbitMQ takes AMQP connections: its HTTP API may
    # answer 503 for a moment. Tried again, then set; a 401 is final at once.
    with _management_api(503, 503, 204) as url:
        outcome = await policy_for_migrate(infra.settings(ROAC_RABBITMQ_MANAGEMENT_URL=url))
    assert outcome.applied and outcome.exit_code == 0, outcome.report
    assert len(_ManagementApi.seen) == 3
    with _management_api(401, 204) as url:
        outcome = await policy_for_migrate(infra.settings(ROAC_RABBITMQ_MANAGEMENT_URL=url))
    assert not outcome.applied and outcome.exit_code == 1
    assert len(_ManagementApi.seen) == 1
