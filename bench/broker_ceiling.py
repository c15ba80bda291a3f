"""The raw ceiling: aio-pika publishing persistent messages with confirms to a quorum queue,
500 unconfirmed in flight, and consuming them with manual acks. No roac code involved."""

from __future__ import annotations

import asyncio

import aio_pika

from bench.harness import Stopwatch
from tests.support.infra import Infra

MESSAGES = 20_000
WINDOW = 500


async def measure(infra: Infra) -> dict[str, float]:
    connection = await aio_pika.connect(infra.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await channel.declare_queue(
            "bench.ceiling", durable=True, arguments={"x-queue-type": "quorum"}
        )
        body = b'{"events": [{"padding": "' + b"x" * 300 + b'"}]}'
        semaphore = asyncio.Semaphore(WINDOW)

        async def publish_one() -> None:
            async with semaphore:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue.name,
                )

        with Stopwatch() as publishing:
            await asyncio.gather(*(publish_one() for _ in range(MESSAGES)))

        await channel.set_qos(prefetch_count=200)
        done = asyncio.Event()
        received = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received == MESSAGES:
                done.set()

        with Stopwatch() as consuming:
            tag = await queue.consume(on_message)
            await done.wait()
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    return {
        "publish_msgs_per_s": MESSAGES / publishing.seconds,
        "consume_msgs_per_s": MESSAGES / consuming.seconds,
    }
