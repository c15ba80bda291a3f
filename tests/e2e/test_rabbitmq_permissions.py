"""An integration's RabbitMQ user, set up as docs/ingress.md says (configure `^$`, write
`^roac\\.ingress$`, read `^$`), may publish to roac.ingress and nothing else: the broker itself
refuses every other exchange, any declaration and any read. What it publishes is still applied."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from urllib.parse import quote

import aio_pika
import aiormq
import httpx
import pytest

from shared.topology import INGRESS_EXCHANGE, INGRESS_QUEUE
from tests.e2e.conftest import Stack, run_id
from tests.support.infra import API_KEY

pytestmark = pytest.mark.e2e


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


USER = f"crm-bus-{run_id()}"


@pytest.fixture(scope="module")
def integration_url(stack: Stack) -> Iterator[str]:
    """A user for one integration, with the documented permissions on the stack's vhost."""
    user, password = USER, secrets.token_urlsafe(24)
    _rabbitmqctl("add_user", user, password)
    try:
        _rabbitmqctl(
            "set_permissions", "-p", stack.infra.vhost, user, "^$", r"^roac\.ingress$", "^$"
        )
        yield f"amqp://{user}:{password}@127.0.0.1:5672/{quote(stack.infra.vhost, safe='')}"
    finally:
        _rabbitmqctl("delete_user", user)


async def _as_integration(
    url: str, action: Callable[[aio_pika.abc.AbstractChannel], Awaitable[object]]
) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await action(channel)


def _refused(url: str, action: Callable[[aio_pika.abc.AbstractChannel], Awaitable[object]]) -> str:
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as refused:
        asyncio.run(_as_integration(url, action))
    return str(refused.value)


def _message(body: Mapping[str, object], user_id: str | None = None) -> aio_pika.Message:
    return aio_pika.Message(
        json.dumps(body).encode(),
        message_id=f"perm-{run_id()}",
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        user_id=user_id,
    )


def test_the_integration_user_may_publish_to_the_ingress(
    stack: Stack, integration_url: str
) -> None:
    run = run_id()
    person = {"source": "e2e", "external_id": f"perm-{run}", "name": f"Per Mission {run}"}

    async def publish(channel: aio_pika.abc.AbstractChannel) -> None:
        exchange = await channel.get_exchange(INGRESS_EXCHANGE.name, ensure=False)
        await exchange.publish(_message(person), routing_key="contacts")

    asyncio.run(_as_integration(integration_url, publish))
    # Applied like an HTTP upsert: the matcher knows the person.
    deadline = time.monotonic() + 20
    with httpx.Client(
        base_url=stack.matcher_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    ) as matcher:
        while (
            matcher.get(f"/v1/contacts/e2e/perm-{run}/identity").status_code != 200
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert matcher.get(f"/v1/contacts/e2e/perm-{run}/identity").status_code == 200


def test_the_broker_refuses_everything_else(stack: Stack, integration_url: str) -> None:
    async def publish_to_events(channel: aio_pika.abc.AbstractChannel) -> None:
        exchange = await channel.get_exchange("roac.events", ensure=False)
        await exchange.publish(_message({"forged": True}), routing_key="contact.erased.v1")

    async def publish_to_default(channel: aio_pika.abc.AbstractChannel) -> None:
        await channel.default_exchange.publish(_message({}), routing_key="roac.matcher")

    async def declare_queue(channel: aio_pika.abc.AbstractChannel) -> None:
        await channel.declare_queue(f"sneaky-{run_id()}", auto_delete=True)

    async def declare_exchange(channel: aio_pika.abc.AbstractChannel) -> None:
        await channel.declare_exchange("roac.ingress", aio_pika.ExchangeType.FANOUT, durable=True)

    async def read_ingress(channel: aio_pika.abc.AbstractChannel) -> None:
        queue = await channel.get_queue(INGRESS_QUEUE.name, ensure=False)
        await queue.get(no_ack=False, fail=False)

    async def read_parked(channel: aio_pika.abc.AbstractChannel) -> None:
        queue = await channel.get_queue("roac.ingest.ingress.dlq", ensure=False)
        await queue.get(no_ack=False, fail=False)

    async def bind(channel: aio_pika.abc.AbstractChannel) -> None:
        queue = await channel.get_queue(INGRESS_QUEUE.name, ensure=False)
        await queue.bind("roac.events", routing_key="#")

    for action in (
        publish_to_events,
        publish_to_default,
        declare_queue,
        declare_exchange,
        read_ingress,
        read_parked,
        bind,
    ):
        assert "ACCESS_REFUSED" in _refused(integration_url, action), action.__name__


def _known(stack: Stack, source: str, external_id: str) -> bool:
    with httpx.Client(
        base_url=stack.matcher_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    ) as matcher:
        return matcher.get(f"/v1/contacts/{source}/{external_id}/identity").status_code == 200


def test_a_user_named_like_an_api_key_writes_only_that_keys_sources(
    stack: Stack, integration_url: str
) -> None:
    created = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "create", USER, "--source", "crm"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    time.sleep(1)  # the key reaches ingest's keyring at once (NOTIFY), at most in seconds
    run = run_id()
    crm = {"source": "crm", "external_id": f"bound-{run}", "name": "Crm Person"}
    forum = {"source": "forum", "external_id": f"bound-{run}", "name": "Forum Person"}

    refused = _message(forum, user_id=USER)

    async def publish(channel: aio_pika.abc.AbstractChannel) -> None:
        exchange = await channel.get_exchange(INGRESS_EXCHANGE.name, ensure=False)
        await exchange.publish(refused, routing_key="contacts")
        await exchange.publish(_message(crm, user_id=USER), routing_key="contacts")

    asyncio.run(_as_integration(integration_url, publish))
    deadline = time.monotonic() + 20
    while not _known(stack, "crm", f"bound-{run}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _known(stack, "crm", f"bound-{run}")
    assert not _known(stack, "forum", f"bound-{run}")  # parked, with the reason:
    parked = [
        line
        for line in stack.ingest.log_path.read_text().splitlines()
        if f"parked ingress message {refused.message_id}" in line
    ]
    assert parked and "may write the source(s) crm only, not forum" in parked[0]

    # Replayed (`roac dlq replay ingress`), it is judged as its sender again, although a parked
    # copy cannot keep its user_id: still refused while the key is bound to crm ...
    assert f"{refused.message_id}  contacts" in _roac(stack, "dlq", "replay", "ingress")
    time.sleep(2)
    assert not _known(stack, "forum", f"bound-{run}")
    reparked = [
        line
        for line in stack.ingest.log_path.read_text().splitlines()
        if f"parked ingress message {refused.message_id} from {USER}:" in line
    ]
    assert len(reparked) == 2, reparked
    # ... and accepted, in the integration's name, once the operator lets the key write forum.
    _roac(stack, "keys", "revoke", USER)
    _roac(stack, "keys", "create", USER, "--source", "crm", "--source", "forum")
    time.sleep(1)
    assert f"{refused.message_id}  contacts" in _roac(stack, "dlq", "replay", "ingress")
    deadline = time.monotonic() + 20
    while not _known(stack, "forum", f"bound-{run}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _known(stack, "forum", f"bound-{run}")


def _roac(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr
