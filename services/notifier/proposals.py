"""Taking in proposed introductions: record each once and start its first step (the asks, or in
direct mode the introduction), in one transaction with the jobs that will deliver them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from services.notifier import optin
from services.notifier.clock import Clock
from services.notifier.planning import QuietHours, plan
from services.notifier.scheduling import JobCause, schedule_planned
from services.notifier.store.rows import NewIntro
from shared.erasure import ERASED
from shared.events import ContactRef, DeliveryKind, EventBatch, IntroProposed, Participant
from shared.metrics import EVENTS_CONSUMED

if TYPE_CHECKING:
    from services.notifier.store.uow import NotifierStore

log = logging.getLogger("roac.notifier")


DeliverNow = Callable[[Sequence[tuple[UUID, JobCause]]], Awaitable[None]]


class ProposalIntake:
    """Records each proposal once and starts its first step, a whole message of proposals in
    one transaction with set-based writes. Messages due now are attempted right after the
    commit (no job round trip through RabbitMQ), and the proposal message is acked only after
    that; a redelivered message attempts whatever its first run left untried."""

    def __init__(
        self,
        store: NotifierStore,
        *,
        double_opt_in: bool,
        ask_ttl: timedelta,
        quiet: QuietHours,
        clock: Clock,
        deliver: DeliverNow,
    ) -> None:
        self._store = store
        self._double_opt_in = double_opt_in
        self._ask_ttl = ask_ttl
        self._quiet = quiet
        self._clock = clock
        self._deliver = deliver

    async def apply(self, batch: EventBatch) -> None:
        proposals = list(
            {e.data.proposal_id: e for e in batch.events if isinstance(e, IntroProposed)}.values()
        )
        if not all(isinstance(e, IntroProposed) for e in batch.events):
            raise ValueError(f"the notifier does not handle {batch.type} here")
        now = self._clock.now()
        causes = {p.data.proposal_id: JobCause(p.correlation_id, p.message_id) for p in proposals}
        async with self._store.unit_of_work() as uow:
            opted_out = await uow.people.opted_out(
                (person.source, person.external_id)
                for p in proposals
                for person in p.data.participants
            )
            erased = await uow.people.erased(
                (person.source, person.external_id)
                for p in proposals
                for person in p.data.participants
            )
            if erased:
                # Proposed before the erasure reached the matcher: recorded without them (a
                # placeholder, declined), nothing sent to anyone.
                proposals = [_without(p, erased) for p in proposals]
                opted_out.add((ERASED, ERASED))
            steps = {p.data.proposal_id: self._first_step(p, opted_out) for p in proposals}
            recorded = await uow.intros.insert(
                [
                    NewIntro(
                        intro=p.data,
                        mode="double_opt_in" if self._double_opt_in else "direct",
                        state=steps[p.data.proposal_id].state,
                        correlation_id=p.correlation_id,
                        proposed_at=p.occurred_at,
                        asked_until=now + self._ask_ttl if steps[p.data.proposal_id].ask else None,
                    )
                    for p in proposals
                ]
            )
            new = [p for p in proposals if p.data.proposal_id in recorded]
            repeated = [p.data.proposal_id for p in proposals if p.data.proposal_id not in recorded]
            due = (
                [(d, causes[i]) for i, d in await uow.deliveries.untried(repeated)]
                if repeated
                else []
            )
            await uow.intros.insert_seats([(p.data, steps[p.data.proposal_id].seats) for p in new])
            planned = []
            for p in new:
                step = steps[p.data.proposal_id]
                kind = DeliveryKind.ASK if step.ask else DeliveryKind.INTRO
                cause = causes[p.data.proposal_id]
                positions = step.ask or step.introduce
                planned += [(d, cause) for d in plan(kind, p.data, positions, now, self._quiet)]
            due += await schedule_planned(uow, planned, now=now, inline=True)
        EVENTS_CONSUMED.labels("notifier", batch.type, "processed").inc(len(new))
        if repeated:
            EVENTS_CONSUMED.labels("notifier", batch.type, "duplicate").inc(len(repeated))
        if due:
            await self._deliver(due)

    def _first_step(self, proposal: IntroProposed, opted_out: set[tuple[str, str]]) -> optin.Step:
        step = optin.start(proposal.data, double_opt_in=self._double_opt_in)
        refs = [(p.source, p.external_id) for p in proposal.data.participants]
        if not any(ref in opted_out for ref in refs):
            return step
        # Proposed before the matcher heard of the opt-out: record it, send nothing.
        seats = tuple(
            optin.Seat(s.position, s.role, optin.Answer.DECLINED)
            if refs[s.position] in opted_out
            else s
            for s in step.seats
        )
        return optin.Step(optin.IntroState.DECLINED, seats)


def _without(proposal: IntroProposed, erased: set[tuple[str, str]]) -> IntroProposed:
    """The proposal with erased people replaced by a placeholder."""

    def gone(ref: ContactRef | None) -> bool:
        return ref is not None and (ref.source, ref.external_id) in erased

    placeholder = Participant(source=ERASED, external_id=ERASED, name=ERASED, channels=[])
    anonymous = ContactRef(source=ERASED, external_id=ERASED)
    data = proposal.data
    participants = [placeholder if gone(p) else p for p in data.participants]
    topics = [
        t.model_copy(
            update={
                "seeker": anonymous if gone(t.seeker) else t.seeker,
                "offerer": anonymous if gone(t.offerer) else t.offerer,
            }
        )
        for t in data.topics
    ]
    return proposal.model_copy(
        update={"data": data.model_copy(update={"participants": participants, "topics": topics})}
    )
