"""`roac deliveries retry`: give parked deliveries a fresh budget of attempts.

Reads the delivery queue's dead-letter queue (parked jobs, and jobs a bug made the worker
reject), makes each delivery pending again and queues a new job through the outbox, which the
running notifier's relay publishes; then does the same for any delivery still marked parked
whose message was removed from the queue by hand. Acks a parked message only after the
database committed, so an interrupted replay loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from pydantic import ValidationError

from services.notifier.scheduling import JobCause, run_now
from services.notifier.store import NotifierStore
from shared.db import create_pool
from shared.events import DeliveryRequested, decode_batch
from shared.settings import Settings
from shared.topology import DELIVERY_QUEUE


@dataclass
class ReplayReport:
    replayed: int = 0
    already_done: int = 0
    unreadable: int = 0


async def retry_parked(settings: Settings) -> ReplayReport:
    report = ReplayReport()
    pool = await create_pool(settings, max_size=2)
    store = NotifierStore(pool)
    cause = JobCause("deliveries-retry", None)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        parked_queue = await channel.declare_queue(DELIVERY_QUEUE.dead_letter_queue, passive=True)
        unreadable = []
        while (message := await parked_queue.get(no_ack=False, fail=False)) is not None:
            try:
                jobs = [
                    e for e in decode_batch(message.body).events if isinstance(e, DeliveryRequested)
                ]
            except ValidationError:
                unreadable.append(message)
                continue
            async with store.unit_of_work() as uow:
                for job in jobs:
                    reset = await uow.reset_parked(job.data.delivery_id)
                    if reset is not None:
                        await run_now(uow, reset.id, reset.generation, cause)
                        report.replayed += 1
                        continue
                    current = await uow.delivery(job.data.delivery_id)
                    if (
                        current
                        and current.status == "pending"
                        and current.generation == job.data.generation
                    ):
                        # A job the worker rejected (a bug, since fixed): queue it again.
                        await run_now(uow, current.id, current.generation, cause)
                        report.replayed += 1
                    else:
                        report.already_done += 1
            await message.ack()
        for message in unreadable:
            await message.nack(requeue=True)
        report.unreadable = len(unreadable)
        async with store.unit_of_work() as uow:
            for parked in await uow.parked():
                reset = await uow.reset_parked(parked.id)
                if reset is not None:
                    await run_now(uow, reset.id, reset.generation, cause)
                    report.replayed += 1
    finally:
        await connection.close()
        await pool.close()
    return report


async def list_parked(settings: Settings) -> list[dict[str, object]]:
    pool = await create_pool(settings, max_size=1)
    try:
        async with NotifierStore(pool).unit_of_work() as uow:
            return [
                {
                    "delivery_id": str(d.id),
                    "proposal_id": str(d.proposal_id),
                    "kind": d.kind.value,
                    "channel": d.channel,
                    "attempts": d.attempts,
                }
                for d in await uow.parked()
            ]
    finally:
        await pool.close()
