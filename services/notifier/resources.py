"""Taking in resource proposals (`resource.proposed.v1`): record each once and deliver it to its
one recipient, without asking first (it is information, not an introduction).

The same machinery as introductions from there on: one delivery row (kind `resource`) per
proposal, attempted right after the commit when due now, otherwise (quiet hours) through a delay
queue; retries, pacing, fallback to the next channel and parking are the delivery worker's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from services.notifier import metrics
from services.notifier.clock import Clock
from services.notifier.planning import QuietHours, plan_resource
from services.notifier.proposals import DeliverNow
from services.notifier.scheduling import JobCause, schedule_planned
from services.notifier.store.rows import NewResource
from shared.events import DeliveryKind, EventBatch, ResourceProposed
from shared.metrics import EVENTS_CONSUMED

if TYPE_CHECKING:
    from services.notifier.store.uow import NotifierStore

log = logging.getLogger("roac.notifier")


class ResourceIntake:
    """Records a message of resource proposals in one transaction (set-based), skipping people
    who opted out (their delivery is recorded `suppressed`, nothing is sent), and attempts the
    deliveries due now once it committed. A redelivered message records nothing again and only
    attempts what its first run left untried; the delivery rows' locks keep a message from being
    sent twice."""

    def __init__(
        self, store: NotifierStore, *, quiet: QuietHours, clock: Clock, deliver: DeliverNow
    ) -> None:
        self._store = store
        self._quiet = quiet
        self._clock = clock
        self._deliver = deliver

    async def apply(self, batch: EventBatch) -> None:
        if not all(isinstance(e, ResourceProposed) for e in batch.events):
            raise ValueError(f"the resource intake does not handle {batch.type}")
        proposals = list(
            {
                e.data.proposal_id: e for e in batch.events if isinstance(e, ResourceProposed)
            }.values()
        )
        now = self._clock.now()
        causes = {p.data.proposal_id: JobCause(p.correlation_id, p.message_id) for p in proposals}
        async with self._store.unit_of_work() as uow:
            recorded = await uow.resources.insert(
                [NewResource(p.data, p.correlation_id, p.occurred_at) for p in proposals]
            )
            new = [p for p in proposals if p.data.proposal_id in recorded]
            repeated = [p.data.proposal_id for p in proposals if p.data.proposal_id not in recorded]
            due = (
                [(d, causes[i]) for i, d in await uow.deliveries.untried(repeated)]
                if repeated
                else []
            )
            opted_out = await uow.people.opted_out(
                (p.data.recipient.source, p.data.recipient.external_id) for p in new
            )
            planned = [(plan_resource(p.data, now, self._quiet), p) for p in new]
            suppressed = [
                d
                for d, p in planned
                if (p.data.recipient.source, p.data.recipient.external_id) in opted_out
            ]
            if suppressed:
                await uow.deliveries.insert(suppressed, status="suppressed")
            skipped = {d.id for d in suppressed}
            wanted = [(d, causes[d.proposal_id]) for d, _ in planned if d.id not in skipped]
            due += await schedule_planned(uow, wanted, now=now, inline=True)
        EVENTS_CONSUMED.labels("notifier", batch.type, "processed").inc(len(new))
        if repeated:
            EVENTS_CONSUMED.labels("notifier", batch.type, "duplicate").inc(len(repeated))
        for delivery in suppressed:
            metrics.DELIVERIES.labels(
                delivery.channel.value, DeliveryKind.RESOURCE.value, "suppressed"
            ).inc()
        if due:
            await self._deliver(due)
