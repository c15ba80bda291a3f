"""The AMQP ingress end to end: people and interests published to roac.ingress are consumed by
the ingest process, matched by the matcher and introduced by the notifier, as over HTTP; a
poison message is parked with its reason and introduces nobody."""

from __future__ import annotations

import asyncio
import json
import time

import aio_pika
import httpx
import pytest

from shared.topology import INGRESS_EXCHANGE, INGRESS_QUEUE
from tests.e2e.conftest import Stack, new_person, run_id
from tests.support.amqp import connect, wait_for_message

pytestmark = pytest.mark.e2e


async def _publish(url: str, messages: list[tuple[str, str, bytes]]) -> None:
    connection = await connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(INGRESS_EXCHANGE.name)
        for routing_key, message_id, body in messages:
            await exchange.publish(
                aio_pika.Message(
                    body,
                    message_id=message_id,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
            )


def test_ingest_reports_its_ingress_consumer_in_readiness(stack: Stack) -> None:
    checks = httpx.get(f"{stack.ingest_url}/readyz", timeout=10).json()["checks"]
    assert checks == {"broker": True, "consumers": True, "database": True}


def test_people_published_to_the_ingress_are_introduced(stack: Stack) -> None:
    run = run_id()
    people = [new_person(run, i) for i in range(6)]
    # Four people with a hobby each, so that the pair's shared topic is a rare one (as in
    # test_pipeline.py); then the pair, one interest message each.
    hobbies = [
        {"source": "e2e", "external_id": f"{run}-{i}", "topic": f"hobby {i} {run}"}
        for i in range(2, 6)
    ]
    pair = [
        {"source": "e2e", "external_id": f"{run}-{i}", "topic": f"amqp kites {run}"}
        for i in range(2)
    ]
    asyncio.run(
        _publish(
            stack.infra.amqp_url,
            [
                ("contacts", f"c-{run}", json.dumps({"items": people}).encode()),
                ("interests", f"h-{run}", json.dumps({"items": hobbies}).encode()),
                ("interests", f"p0-{run}", json.dumps(pair[0]).encode()),
                ("interests", f"p1-{run}", json.dumps(pair[1]).encode()),
                # Again, as after a lost confirm: the same event ids, applied once.
                ("interests", f"p1-{run}", json.dumps(pair[1]).encode()),
            ],
        )
    )
    assert stack.sink.wait_for(people[0]["email"], within=15), "no introduction arrived"
    assert stack.sink.wait_for(people[1]["email"], within=15), "no introduction arrived"
    time.sleep(2.0)  # a duplicate would arrive by now
    assert [len(stack.sink.to(p["email"])) for p in people[:2]] == [1, 1]


def test_a_poison_message_is_parked_with_its_reason(stack: Stack) -> None:
    run = run_id()
    person = new_person(run, 0, email="not an address")

    async def scenario() -> aio_pika.abc.AbstractIncomingMessage | None:
        await _publish(
            stack.infra.amqp_url, [("contacts", f"p-{run}", json.dumps(person).encode())]
        )
        connection = await connect(stack.infra.amqp_url)
        async with connection:
            channel = await connection.channel()
            parking = await channel.declare_queue(INGRESS_QUEUE.dead_letter_queue, passive=True)
            deadline = 15.0
            while (found := await wait_for_message(parking, within=deadline)) is not None:
                if found.message_id == f"p-{run}":
                    return found
                deadline = 2.0
            return None

    parked = asyncio.run(scenario())
    assert parked is not None, "the poison message was not parked"
    reason = str(parked.headers["x-roac-reason"])
    assert reason.startswith("1 invalid field: email: ")
    assert "not an address" not in reason
