"""The AMQP ingress on the real RabbitMQ: messages published to roac.ingress become events on
roac.events, a duplicate publishes the same event ids, and what fails validation is parked in
roac.ingest.ingress.dlq with its reason while nothing reaches roac.events.

A vhost of its own: events published here must not reach the roac.matcher queue other
integration tests of the session consume."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from faststream.rabbit import RabbitBroker

from services.ingest import subscriptions
from services.ingest.amqp_ingress import Ingress, ingress_key
from services.ingest.idempotency import event_id
from shared.broker import EventPublisher, make_broker
from shared.settings import Settings
from shared.topology import INGRESS_EXCHANGE, INGRESS_QUEUE, declare_topology
from tests.support.amqp import connect, drain, first_death, tap, wait_for_message
from tests.support.infra import isolated_infra

MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def ingress_settings() -> Iterator[Settings]:
    with isolated_infra("ingress") as infra:
        yield infra.settings(ROAC_INGEST_MAX_BODY_BYTES=MAX_BODY_BYTES)


@pytest.fixture(scope="module")
async def ingest(ingress_settings: Settings) -> AsyncIterator[RabbitBroker]:
    """Ingest's ingress consumer, wired as services/ingest/app.py wires it."""
    broker = make_broker(ingress_settings, service="ingest", prefetch=10)
    subscriptions.register(
        broker,
        Ingress(
            EventPublisher(broker, "ingest"),
            subscriptions.QueueParker(broker, roac_user=ingress_settings.amqp_user),
            max_body_bytes=MAX_BODY_BYTES,
        ),
        roac_user=ingress_settings.amqp_user,
    )
    await broker.connect()
    await declare_topology(broker)
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture
async def connection(
    ingest: RabbitBroker, ingress_settings: Settings
) -> AsyncIterator[AbstractRobustConnection]:
    created = await connect(ingress_settings.amqp_url)
    async with created:
        yield created


async def _publish(
    channel: AbstractChannel, routing_key: str, body: bytes | dict[str, Any], **properties: Any
) -> None:
    """As an integration would: persistent, with publisher confirms (aio-pika's default)."""
    exchange = await channel.get_exchange(INGRESS_EXCHANGE.name)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    await exchange.publish(
        aio_pika.Message(
            raw,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            **properties,
        ),
        routing_key=routing_key,
    )


def _events(messages: list[AbstractIncomingMessage]) -> list[dict[str, Any]]:
    return [event for m in messages for event in json.loads(m.body)["events"]]


def _person(run: str, index: int) -> dict[str, str]:
    return {
        "source": "amqp-test",
        "external_id": f"{run}-{index}",
        "name": f"Person {index}",
        "email": f"p{index}.{run}@example.org",
    }


async def _ingress_queue_is_empty(channel: AbstractChannel) -> bool:
    queue = await channel.declare_queue(INGRESS_QUEUE.name, passive=True)
    return await queue.get(no_ack=False, fail=False) is None


async def test_valid_contacts_and_interests_become_events_with_ids_from_the_message_id(
    connection: AbstractRobustConnection,
) -> None:
    run = uuid.uuid4().hex[:8]
    observed = await tap(connection)
    channel = await connection.channel()
    contacts_id, interests_id = f"contacts-{run}", f"interests-{run}"
    await _publish(
        channel,
        "contacts",
        {"items": [_person(run, 0), _person(run, 1)]},
        message_id=contacts_id,
        user_id="guest",  # RabbitMQ checks it is the connection's user
        correlation_id=f"sync-{run}",
    )
    interests = [
        {"source": "amqp-test", "external_id": f"{run}-{i}", "topic": f"Kites {run}"}
        for i in range(2)
    ]
    await _publish(channel, "interests", {"items": interests}, message_id=interests_id)

    events = _events(await drain(observed, settle=1.5))
    contacts = [e for e in events if e["type"] == "contact.upserted.v1"]
    declared = [e for e in events if e["type"] == "interest.declared.v1"]
    assert [c["data"]["external_id"] for c in contacts] == [f"{run}-0", f"{run}-1"]
    assert [c["message_id"] for c in contacts] == [
        str(event_id("guest", ingress_key("contacts", contacts_id), i)) for i in range(2)
    ]
    assert {c["integration"] for c in contacts} == {"guest"}
    assert {c["correlation_id"] for c in contacts} == {f"sync-{run}"}
    assert [d["data"]["topic"] for d in declared] == [f"kites {run}"] * 2
    assert {d["integration"] for d in declared} == {"amqp"}  # no user_id: "amqp"
    assert [d["message_id"] for d in declared] == [
        str(event_id("amqp", ingress_key("interests", interests_id), i)) for i in range(2)
    ]
    assert await _ingress_queue_is_empty(channel)  # acked


async def test_a_duplicate_ingress_message_publishes_the_same_event_ids(
    connection: AbstractRobustConnection,
) -> None:
    run = uuid.uuid4().hex[:8]
    observed = await tap(connection, "contact.upserted.v1")
    channel = await connection.channel()
    body = {"items": [_person(run, 0), _person(run, 1), _person(run, 2)]}
    for _ in range(2):  # a client retrying after a lost confirm sends the same message again
        await _publish(channel, "contacts", body, message_id=f"dup-{run}")
    messages = await drain(observed, settle=1.5)
    assert len(messages) == 2
    first, second = ([e["message_id"] for e in json.loads(m.body)["events"]] for m in messages)
    assert len(set(first)) == 3
    assert first == second


@pytest.mark.parametrize(
    ("routing_key", "body", "message_id", "reason"),
    [
        ("contacts", b'{"source": "crm", "name": ', "bad-json", "body is not JSON: "),
        (
            "interests",
            {"items": [{"source": "crm", "external_id": "1", "topic": "t", "kind": "loves"}]},
            "bad-kind",
            "1 invalid field: items[0].kind: ",
        ),
        (
            "contacts",
            {"source": "crm", "external_id": "1", "name": "Ada", "email": "ada.secret@@x"},
            "bad-email",
            "1 invalid field: email: ",
        ),
        ("contact", {"source": "crm", "external_id": "1", "name": "Ada"}, "bad-key", "unknown "),
        ("contacts", b"[" + b"1," * MAX_BODY_BYTES + b"1]", "too-big", "body is "),
    ],
)
async def test_an_invalid_message_is_parked_with_its_reason_and_publishes_nothing(
    connection: AbstractRobustConnection,
    routing_key: str,
    body: bytes | dict[str, Any],
    message_id: str,
    reason: str,
) -> None:
    # (A message without message_id cannot be sent from here: aiormq gives every publish a
    # random one. tests/unit/test_ingress.py covers it.)
    run = uuid.uuid4().hex[:8]
    observed = await tap(connection)
    channel = await connection.channel()
    parking = await channel.declare_queue(INGRESS_QUEUE.dead_letter_queue, passive=True)
    tagged = f"{message_id}-{run}"
    await _publish(
        channel, routing_key, body, message_id=tagged, headers={"x-integration-batch": run}
    )

    parked = await wait_for_message(parking)
    assert parked is not None, "nothing was parked"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert parked.body == raw  # the original, for an operator to fix and publish again
    assert parked.message_id == tagged
    assert parked.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    headers = parked.headers
    assert str(headers["x-roac-reason"]).startswith(reason)
    assert "secret" not in str(headers["x-roac-reason"])
    assert headers["x-roac-routing-key"] == routing_key
    assert headers["x-integration-batch"] == run  # the integration's own headers are kept
    assert "x-death" not in headers  # parked by ingest, not dead-lettered by RabbitMQ
    assert await drain(observed, settle=1.0) == []  # nothing reached roac.events
    assert await _ingress_queue_is_empty(channel)  # acked


async def test_a_message_the_code_cannot_handle_is_dead_lettered_to_the_same_parking_queue(
    ingress_settings: Settings, connection: AbstractRobustConnection
) -> None:
    """The queue's own dead-lettering (a bug, or the delivery limit) ends in the parking queue,
    with RabbitMQ's x-death record instead of x-roac-reason."""

    class Broken:
        async def park(self, *_: object) -> None:
            raise ValueError("a bug")

    # A second consumer on the queue, whose parker is broken; the fixture's consumer may take
    # some messages, so several go until this one rejects one.
    broker = make_broker(ingress_settings, service="ingest-broken", prefetch=1)
    subscriptions.register(
        broker,
        Ingress(EventPublisher(broker, "ingest"), Broken(), max_body_bytes=1024),
        roac_user=ingress_settings.amqp_user,
    )
    await broker.connect()
    await broker.start()
    try:
        channel = await connection.channel()
        parking = await channel.declare_queue(INGRESS_QUEUE.dead_letter_queue, passive=True)
        await drain(parking, settle=0.5)
        for i in range(20):
            await _publish(channel, "contacts", b"{", message_id=f"bug-{i}")
        parked = [m for m in await drain(parking, settle=2.0)]
    finally:
        await broker.stop()
    dead_lettered = [m for m in parked if "x-death" in m.headers]
    assert dead_lettered, "no message was dead-lettered by RabbitMQ"
    death = first_death(dead_lettered[0])
    assert death["reason"] == "rejected"
    assert death["queue"] == INGRESS_QUEUE.name
    assert all("x-roac-reason" in m.headers for m in parked if "x-death" not in m.headers)
