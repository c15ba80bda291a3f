"""Looking at RabbitMQ directly from tests: taps on the events exchange and queue reads."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from shared.topology import EVENTS_EXCHANGE


async def tap(connection: AbstractRobustConnection, binding: str = "#") -> AbstractQueue:
    """An exclusive queue that sees every event published to roac.events from now on."""
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(EVENTS_EXCHANGE.name, routing_key=binding)
    return queue


async def drain(queue: AbstractQueue, settle: float = 0.5) -> list[AbstractIncomingMessage]:
    """Everything in the queue, waiting `settle` seconds of silence before concluding."""
    found: list[AbstractIncomingMessage] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < settle:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        found.append(message)
        quiet_since = time.monotonic()
    return found


async def wait_for_message(
    queue: AbstractQueue, within: float = 10.0
) -> AbstractIncomingMessage | None:
    """Poll with basic.get: quorum queue counters lag, a get does not."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.1)
    return None


async def connect(url: str) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(url)


def first_death(message: AbstractIncomingMessage) -> dict[str, Any]:
    """RabbitMQ's record of why and where a dead-lettered message died first."""
    deaths = message.headers.get("x-death")
    assert isinstance(deaths, list) and deaths, "the message was not dead-lettered"
    death = deaths[0]
    assert isinstance(death, dict)
    return dict(death)
