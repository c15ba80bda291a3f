"""Topology, publishing, the consumer policy and the outbox relay on the real RabbitMQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import aiormq.exceptions
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage

from shared import consumer as consumer_policy
from shared import outbox
from shared.broker import EventPublisher, make_broker
from shared.consumer import handle_message, skip_decoding
from shared.errors import TransientError
from shared.events import EventBatch, InterestData, InterestDeclared, encode_batch
from shared.settings import Settings
from shared.topology import (
    DELIVERY_LIMIT,
    EVENTS_EXCHANGE,
    MATCHER_QUEUE,
    ConsumerQueue,
    declare_consumer_queue,
    declare_topology,
)
from tests.support.amqp import connect, drain, first_death, tap, wait_for_message


def _event(topic: str = "t") -> InterestDeclared:
    return InterestDeclared(
        source="ingest",
        correlation_id="c",
        data=InterestData(source="s", external_id="1", topic=topic),
    )


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[RabbitBroker]:
    created = make_broker(settings, service="test", prefetch=10)
    await created.connect()
    await declare_topology(created)
    await created.start()
    yield created
    await created.stop()


async def test_declaring_the_topology_twice_is_harmless(broker: RabbitBroker) -> None:
    await declare_topology(broker)
    await declare_topology(broker)


async def test_unroutable_publishes_raise(broker: RabbitBroker) -> None:
    with pytest.raises(aiormq.exceptions.PublishError):
        await broker.publish(
            b"{}", exchange=EVENTS_EXCHANGE, routing_key="nobody.listens.v1", persist=True
        )


async def test_published_events_are_persistent_and_routed_by_type(
    broker: RabbitBroker, settings: Settings
) -> None:
    connection = await connect(settings.amqp_url)
    async with connection:
        observed = await tap(connection, "interest.declared.v1")
        event = _event()
        await EventPublisher(broker, "test").publish([event])
        [message] = await drain(observed)
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.message_id == str(event.message_id)
        assert message.type == "interest.declared.v1"
        assert EventBatch.model_validate_json(message.body).events[0].message_id == event.message_id


async def _consume_with(
    settings: Settings, queue: ConsumerQueue, apply: object, published: list[bytes]
) -> RabbitBroker:
    broker = make_broker(settings, service="test", prefetch=10)

    @broker.subscriber(queue.rabbit_queue(declare=False), decoder=skip_decoding)
    async def on_message(message: RabbitMessage) -> None:
        await handle_message(message, service="test", queue=queue.name, apply=apply)  # type: ignore[arg-type]

    await broker.connect()
    await declare_topology(broker)
    await broker.start()
    for body in published:
        await broker.publish(body, queue=queue.name, persist=True, message_id=str(uuid.uuid4()))
    return broker


async def _parked(
    settings: Settings, queue: ConsumerQueue, within: float
) -> aio_pika.abc.AbstractIncomingMessage | None:
    connection = await connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        parked = await channel.declare_queue(queue.dead_letter_queue, passive=True)
        return await wait_for_message(parked, within=within)


# A queue of its own so these tests never race a matcher.
TEST_QUEUE = ConsumerQueue("roac.test-consumer", ())


@pytest.fixture
async def test_queue(settings: Settings) -> ConsumerQueue:
    broker = make_broker(settings, service="test")
    await broker.connect()
    await declare_consumer_queue(broker, TEST_QUEUE)
    await broker.stop()
    connection = await connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in (TEST_QUEUE.name, TEST_QUEUE.dead_letter_queue):
            await (await channel.declare_queue(name, passive=True)).purge()
    return TEST_QUEUE


async def test_a_malformed_message_is_parked_at_once(
    settings: Settings, test_queue: ConsumerQueue
) -> None:
    calls: list[EventBatch] = []

    async def apply(batch: EventBatch) -> None:
        calls.append(batch)

    broker = await _consume_with(
        settings, test_queue, apply, [b"garbage", encode_batch([_event()])]
    )
    try:
        parked = await _parked(settings, test_queue, within=10)
        assert parked is not None and parked.body == b"garbage"
        assert first_death(parked)["reason"] == "rejected"
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(calls) == 1  # the good message after the bad one was handled
    finally:
        await broker.stop()


@pytest.mark.parametrize(
    "failure",
    [
        asyncpg.PostgresConnectionError("database restarting"),
        # What a pooled connection raised when PostgreSQL restarted under load (fault suite).
        asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
    ],
    ids=["connection", "client-state"],
)
async def test_a_transient_failure_is_retried_until_it_succeeds(
    settings: Settings,
    test_queue: ConsumerQueue,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    monkeypatch.setattr(consumer_policy, "requeue_delay", lambda attempts: 0.05)
    attempts: list[int] = []

    async def apply(batch: EventBatch) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise failure

    broker = await _consume_with(settings, test_queue, apply, [encode_batch([_event()])])
    try:
        deadline = time.monotonic() + 10
        while len(attempts) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert len(attempts) == 3
        assert await _parked(settings, test_queue, within=0.5) is None
    finally:
        await broker.stop()


async def test_a_message_that_never_succeeds_is_parked_after_the_delivery_limit(
    settings: Settings, test_queue: ConsumerQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_policy, "requeue_delay", lambda attempts: 0.01)
    attempts: list[int] = []

    async def apply(batch: EventBatch) -> None:
        attempts.append(1)
        raise TransientError("never works")

    broker = await _consume_with(settings, test_queue, apply, [encode_batch([_event()])])
    try:
        parked = await _parked(settings, test_queue, within=20)
        assert parked is not None
        assert first_death(parked)["reason"] == "delivery_limit"
        assert len(attempts) == DELIVERY_LIMIT + 1
    finally:
        await broker.stop()


async def test_the_outbox_relay_publishes_committed_rows_and_removes_them(
    settings: Settings, pool: asyncpg.Pool, broker: RabbitBroker
) -> None:
    producer = f"test-{uuid.uuid4().hex[:6]}"
    events = [_event(f"topic {i}") for i in range(5)]
    async with pool.acquire() as conn, conn.transaction():
        await outbox.enqueue(conn, producer, events)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await outbox.enqueue(conn, producer, [_event("never")])
        await transaction.rollback()

    connection = await connect(settings.amqp_url)
    async with connection:
        observed = await tap(connection, "interest.declared.v1")
        relay = outbox.OutboxRelay(
            pool, EventPublisher(broker, "test"), producer, database_url=settings.database_url
        )
        task = asyncio.create_task(relay.run())
        try:
            messages = await drain(observed, settle=1.0)
        finally:
            task.cancel()
    # The relay sends the rows together: one message holding all five events.
    ids = {e.message_id for m in messages for e in EventBatch.model_validate_json(m.body).events}
    assert len(messages) == 1
    assert ids == {e.message_id for e in events}
    assert await outbox.pending_count(pool, producer) == 0


async def test_an_unpublishable_outbox_row_stays_for_the_next_pass(
    settings: Settings, pool: asyncpg.Pool, broker: RabbitBroker
) -> None:
    producer = f"test-{uuid.uuid4().hex[:6]}"
    async with pool.acquire() as conn, conn.transaction():
        await outbox.enqueue(conn, producer, [_event()])
        await conn.execute(
            "UPDATE messaging.outbox SET routing_key = 'nobody.listens.v1' WHERE producer = $1",
            producer,
        )
    relay = outbox.OutboxRelay(
        pool, EventPublisher(broker, "test"), producer, database_url=settings.database_url
    )
    with pytest.raises(aiormq.exceptions.PublishError):
        await relay.drain_once()
    assert await outbox.pending_count(pool, producer) == 1


def test_matcher_queue_arguments_work_on_3_10_and_4_x() -> None:
    arguments = MATCHER_QUEUE.arguments()
    assert arguments["x-queue-type"] == "quorum"
    assert arguments["x-delivery-limit"] == DELIVERY_LIMIT  # 3.10 has no default
    assert arguments["x-dead-letter-strategy"] == "at-least-once"
    assert arguments["x-overflow"] == "reject-publish"  # required by at-least-once
