"""Events per second the matcher applies (inbox, contacts, interests, live matching, outbox,
all committed before the ack), from a queue filled beforehand, in batches of 500 (as batched
ingest sends them) and one event per message (as single requests do)."""

from __future__ import annotations

import asyncio
import random
import time
from itertools import accumulate

import aio_pika
import asyncpg

from bench.harness import BenchStack
from shared.broker import make_broker
from shared.events import (
    ContactData,
    ContactUpserted,
    Event,
    InterestData,
    InterestDeclared,
    encode_batch,
)
from shared.topology import EVENTS_EXCHANGE, declare_topology

CONTACTS = 20_000
INTERESTS = 100_000
TOPICS = 5_000
SINGLE_MESSAGES = 5_000
BATCH = 500


# Topic popularity follows Zipf's law (the r-th topic is declared 1/r as often as the first):
# the most common topic gets ~11% of all interests, thousands of topics are rare.
_TOPIC_WEIGHTS = [1 / rank for rank in range(1, TOPICS + 1)]
_CUMULATIVE = list(accumulate(_TOPIC_WEIGHTS))


def _zipf_topic(rng: random.Random) -> str:
    return f"topic {rng.choices(range(TOPICS), cum_weights=_CUMULATIVE)[0]}"


async def _publish(url: str, batches: list[list[Event]]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE.name)
        semaphore = asyncio.Semaphore(200)

        async def one(batch: list[Event]) -> None:
            async with semaphore:
                await exchange.publish(
                    aio_pika.Message(
                        encode_batch(batch), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                    ),
                    routing_key=batch[0].type,
                )

        await asyncio.gather(*(one(b) for b in batches))


async def _wait_applied(database_url: str, expected: int, within: float = 900) -> float:
    conn = await asyncpg.connect(database_url)
    try:
        started = time.perf_counter()
        while time.perf_counter() - started < within:
            done = await conn.fetchval(
                "SELECT count(*) FROM messaging.inbox WHERE consumer = 'matcher'"
            )
            if done >= expected:
                return time.perf_counter() - started
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the matcher applied {done} of {expected} events")
    finally:
        await conn.close()


async def _declare(stack: BenchStack) -> None:
    broker = make_broker(stack.infra.settings(), service="bench")
    await broker.connect()
    await declare_topology(broker)
    await broker.stop()


def _contact(i: int) -> ContactUpserted:
    return ContactUpserted(
        source="ingest",
        correlation_id="bench",
        data=ContactData(
            source="bench", external_id=str(i), name=f"Person {i}", email=f"p{i}@example.org"
        ),
    )


def _interest(rng: random.Random, i: int) -> InterestDeclared:
    return InterestDeclared(
        source="ingest",
        correlation_id="bench",
        data=InterestData(
            source="bench", external_id=str(rng.randrange(CONTACTS)), topic=_zipf_topic(rng)
        ),
    )


async def measure(stack: BenchStack) -> dict[str, float]:
    rng = random.Random(7)
    await _declare(stack)
    contacts: list[Event] = [_contact(i) for i in range(CONTACTS)]
    interests: list[Event] = [_interest(rng, i) for i in range(INTERESTS)]
    await _publish(
        stack.infra.amqp_url, [contacts[i : i + BATCH] for i in range(0, CONTACTS, BATCH)]
    )
    await _publish(
        stack.infra.amqp_url, [interests[i : i + BATCH] for i in range(0, INTERESTS, BATCH)]
    )
    stack.processes["matcher"].start()
    batched_seconds = await _wait_applied(stack.infra.database_url, CONTACTS + INTERESTS)

    singles: list[Event] = [_interest(rng, i) for i in range(SINGLE_MESSAGES)]
    await _publish(stack.infra.amqp_url, [[e] for e in singles])
    single_seconds = await _wait_applied(
        stack.infra.database_url, CONTACTS + INTERESTS + SINGLE_MESSAGES
    )

    conn = await asyncpg.connect(stack.infra.database_url)
    try:
        proposals = await conn.fetchval("SELECT count(*) FROM matcher.proposals")
    finally:
        await conn.close()
    return {
        "batched_events_per_s": (CONTACTS + INTERESTS) / batched_seconds,
        "single_event_messages_per_s": SINGLE_MESSAGES / single_seconds,
        "proposals": float(proposals),
    }


if __name__ == "__main__":
    # python -m bench.matcher_throughput: this figure alone, on a fresh database.
    from bench.harness import bench_stack

    with bench_stack() as stack:
        print(asyncio.run(measure(stack)))
