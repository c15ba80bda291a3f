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

from services.notifier.scheduling import JobCause, requeue_parked, requeue_parked_job
from services.notifier.store.uow import NotifierStore
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
                    if await requeue_parked_job(uow, job.data, cause):
                        report.replayed += 1
                    else:
                        report.already_done += 1
            await message.ack()
        for message in unreadable:
            await message.nack(requeue=True)
        report.unreadable = len(unreadable)
        async with store.unit_of_work() as uow:
            for parked in await uow.deliveries.parked():
                if await requeue_parked(uow, parked.id, cause) is not None:
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
                for d in await uow.deliveries.parked()
            ]
    finally:
        await pool.close()
