"""An existing deployment gets a binding added to shared/topology.py at its next start: every
service declares the whole topology when it starts, and binding a queue that exists already
adds the routing key. Proven on the real RabbitMQ with the notifier's queue as a deployment
made before it was bound to contact.preferences_changed.v1 (changes made on a person's behalf,
shown on their preferences page)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.broker import EventPublisher, make_broker
from shared.events import ContactPreferencesChanged, EventBatch, PreferencesData
from shared.topology import EVENTS_EXCHANGE, NOTIFIER_QUEUE, declare_topology
from tests.support.amqp import connect, drain
from tests.support.infra import Infra, isolated_infra

PREFERENCES = "contact.preferences_changed.v1"


@pytest.fixture
def fresh() -> Iterator[Infra]:
    """A vhost of its own: no other test's queues or consumers."""
    with isolated_infra("topo") as created:
        yield created


def _pause() -> ContactPreferencesChanged:
    return ContactPreferencesChanged(
        source="ingest",
        correlation_id="c",
        data=PreferencesData(source="crm", external_id="42", changed=["paused_until"]),
    )


async def test_a_binding_added_since_reaches_an_existing_queue_at_the_next_start(
    fresh: Infra,
) -> None:
    settings = fresh.settings()
    assert PREFERENCES in NOTIFIER_QUEUE.bindings
    broker = make_broker(settings, service="test", prefetch=10)
    await broker.connect()
    try:
        # The deployment as it was: the notifier's queue without the binding (the rest
        # declared, so that the publish is routed: the matcher's queue takes it).
        await declare_topology(broker)
        notifier_queue = await broker.declare_queue(NOTIFIER_QUEUE.rabbit_queue())
        await notifier_queue.unbind(EVENTS_EXCHANGE.name, routing_key=PREFERENCES)
        publisher = EventPublisher(broker, "test")
        missed = _pause()
        await publisher.publish([missed])
        # The next start declares the topology again: the binding is there.
        await declare_topology(broker)
        delivered = _pause()
        await publisher.publish([delivered])
    finally:
        await broker.stop()
    connection = await connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(NOTIFIER_QUEUE.name, ensure=True)
        messages = await drain(queue)
    received = [EventBatch.model_validate_json(m.body).events[0].message_id for m in messages]
    assert received == [delivered.message_id]
