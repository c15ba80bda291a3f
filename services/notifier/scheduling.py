"""Turning planned deliveries into rows and jobs, and parked deliveries back into jobs, inside the
caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from services.notifier.planning import PlannedDelivery, QuietHours, plan
from services.notifier.ports import QueuesJobs
from services.notifier.store.rows import DeliveryRecord
from services.notifier.store.uow import NotifierUnitOfWork
from shared.events import DeliveryJobData, DeliveryKind, DeliveryRequested, IntroData
from shared.topology import DELIVERY_QUEUE, REASON_HEADER, delay_queue_for


@dataclass(frozen=True)
class JobCause:
    correlation_id: str
    causation_id: UUID | None


def job(delivery_id: UUID, generation: int, cause: JobCause) -> DeliveryRequested:
    return DeliveryRequested(
        source="notifier",
        correlation_id=cause.correlation_id,
        causation_id=cause.causation_id,
        data=DeliveryJobData(delivery_id=delivery_id, generation=generation),
    )


async def schedule(
    uow: NotifierUnitOfWork,
    intro: IntroData,
    kind: DeliveryKind,
    positions: Sequence[int],
    *,
    now: datetime,
    quiet: QuietHours,
    cause: JobCause,
    inline: bool = False,
) -> list[UUID]:
    """Create the deliveries of one step of one introduction (see `schedule_planned`)."""
    planned = [(d, cause) for d in plan(kind, intro, positions, now, quiet)]
    return [d for d, _ in await schedule_planned(uow, planned, now=now, inline=inline)]


async def schedule_planned(
    uow: NotifierUnitOfWork,
    planned: Sequence[tuple[PlannedDelivery, JobCause]],
    *,
    now: datetime,
    inline: bool = False,
) -> list[tuple[UUID, JobCause]]:
    """Insert planned deliveries (set-based) and queue a job for each new one.

    With `inline`, deliveries due now get no job: the caller attempts them itself once this
    transaction committed (and again if its message is redelivered, see the delivery store's
    `untried`); a delivery due later (quiet hours) waits in a delay queue either way. Returns
    the deliveries left to the caller."""
    new = set(await uow.deliveries.insert([d for d, _ in planned]))
    left: list[tuple[UUID, JobCause]] = []
    now_jobs: list[DeliveryRequested] = []
    later_jobs: dict[str, list[DeliveryRequested]] = {}
    for delivery, cause in planned:
        if delivery.id not in new:
            continue
        wait = (delivery.not_before - now).total_seconds()
        if wait > 0:
            later_jobs.setdefault(delay_queue_for(wait).name, []).append(job(delivery.id, 0, cause))
        elif inline:
            left.append((delivery.id, cause))
        else:
            now_jobs.append(job(delivery.id, 0, cause))
    await uow.outbox.enqueue(now_jobs)
    for tier, jobs in later_jobs.items():
        await uow.outbox.enqueue(jobs, exchange="", routing_key=tier)
    return left


async def run_now(uow: QueuesJobs, delivery_id: UUID, generation: int, cause: JobCause) -> None:
    await uow.outbox.enqueue([job(delivery_id, generation, cause)])


async def run_later(
    uow: QueuesJobs, delivery_id: UUID, generation: int, wait: float, cause: JobCause
) -> None:
    """Through a delay queue: the job returns to the delivery queue when its tier's TTL ends."""
    tier = delay_queue_for(wait)
    await uow.outbox.enqueue(
        [job(delivery_id, generation, cause)], exchange="", routing_key=tier.name
    )


async def park(
    uow: QueuesJobs, delivery_id: UUID, generation: int, reason: str, cause: JobCause
) -> None:
    """Into the delivery queue's dead-letter queue, where `roac deliveries retry` finds it."""
    await uow.outbox.enqueue(
        [job(delivery_id, generation, cause)],
        exchange="",
        routing_key=DELIVERY_QUEUE.dead_letter_queue,
        headers={REASON_HEADER: reason[:200]},
    )


async def requeue_parked(
    uow: NotifierUnitOfWork, delivery_id: UUID, cause: JobCause
) -> DeliveryRecord | None:
    """A parked delivery made pending with a fresh budget of attempts and its job queued (`roac
    deliveries retry`, the console, the parking queue's replay); None when it is not parked."""
    reset = await uow.deliveries.reset_parked(delivery_id)
    if reset is not None:
        await run_now(uow, reset.id, reset.generation, cause)
    return reset


async def requeue_parked_job(
    uow: NotifierUnitOfWork, job: DeliveryJobData, cause: JobCause
) -> bool:
    """A job taken from the parking queue: its delivery retried if parked, or the job queued
    again if its delivery is still pending at the job's generation (a job a bug made the worker
    reject, since fixed). False when there is nothing to send."""
    if await requeue_parked(uow, job.delivery_id, cause) is not None:
        return True
    current = await uow.deliveries.get(job.delivery_id)
    if current is None or current.status != "pending" or current.generation != job.generation:
        return False
    await run_now(uow, current.id, current.generation, cause)
    return True
