"""What people's answers do: accept, decline, unsubscribe (from the signed links), and asks that
expire unanswered. Each is one transaction that locks the introduction first (an unsubscribe:
the person first).

A link of an erased person does nothing at all: it changes nothing, stores nothing (not even
their opt-out, which would store their id again) and publishes nothing; they get a neutral
page (`Outcome.ERASED`). Events the notifier emits carry an opaque correlation id, never a
person's identifiers."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

from services.notifier import metrics, optin
from services.notifier.clock import Clock
from services.notifier.links import InvalidLink, LinkAction, LinkClaim, LinkKeyring
from services.notifier.planning import QuietHours
from services.notifier.scheduling import JobCause, schedule
from shared.events import ContactOptedOut, DeliveryKind, IntroData, OptOutData

if TYPE_CHECKING:
    from services.notifier.store.uow import NotifierStore, NotifierUnitOfWork

log = logging.getLogger("roac.notifier")


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # noted; waiting for the others, or introduced now
    DECLINED = "declined"
    UNSUBSCRIBED = "unsubscribed"
    REPEATED = "repeated"  # the same answer again: nothing changes
    CLOSED = "closed"  # the introduction had ended (declined, expired, answered otherwise)
    EXPIRED = "expired"
    INVALID = "invalid"
    ERASED = "erased"  # the person was erased: nothing to do, and nothing is done


@dataclass(frozen=True)
class AnswerResult:
    outcome: Outcome
    state: optin.IntroState | None = None


class Answers:
    def __init__(
        self,
        store: NotifierStore,
        *,
        keyring: LinkKeyring,
        ask_ttl: timedelta,
        quiet: QuietHours,
        clock: Clock,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._ask_ttl = ask_ttl
        self._quiet = quiet
        self._clock = clock

    def check(self, token: str) -> LinkClaim | AnswerResult:
        """Verify a link without acting on it (for the confirmation page)."""
        try:
            return self._keyring.verify(token, self._clock.now().timestamp())
        except InvalidLink as exc:
            return AnswerResult(Outcome.EXPIRED if str(exc) == "expired" else Outcome.INVALID)

    async def inspect(self, token: str) -> LinkClaim | AnswerResult:
        """`check`, and for a valid link of an erased person the neutral result (for the
        confirmation page: no button to press)."""
        claim = self.check(token)
        if isinstance(claim, AnswerResult):
            return claim
        async with self._store.unit_of_work() as uow:
            if await uow.people.erased([(claim.source, claim.external_id)]):
                return AnswerResult(Outcome.ERASED)
        return claim

    async def answer(self, token: str) -> AnswerResult:
        claim = self.check(token)
        if isinstance(claim, AnswerResult):
            metrics.ANSWERS.labels("invalid").inc()
            return claim
        if claim.action is LinkAction.UNSUBSCRIBE:
            result = await self._unsubscribe(claim)
        elif claim.intro_id is None or claim.action not in (LinkAction.ACCEPT, LinkAction.DECLINE):
            result = AnswerResult(Outcome.INVALID)  # a check-in's link: checkin_service.py
        else:
            result = await self._answer(claim, claim.intro_id)
        metrics.ANSWERS.labels(result.outcome.value).inc()
        return result

    async def _answer(self, claim: LinkClaim, intro_id: UUID) -> AnswerResult:
        async with self._store.unit_of_work() as uow:
            intro = await uow.intros.lock(intro_id)
            # After the introduction's lock: an erasure naming them has committed or waits.
            if await uow.people.erased([(claim.source, claim.external_id)]):
                return AnswerResult(Outcome.ERASED)
            if intro is None:
                return AnswerResult(Outcome.INVALID)
            seats = await uow.intros.seats(intro_id)
            people = intro.intro.participants
            position = next(
                (
                    s.position
                    for s in seats
                    if (people[s.position].source, people[s.position].external_id)
                    == (claim.source, claim.external_id)
                ),
                None,
            )
            if position is None:
                return AnswerResult(Outcome.INVALID)
            before = seats[position].answer
            if claim.action is LinkAction.ACCEPT:
                step = optin.accept(intro.state, seats, position)
                repeat = before is optin.Answer.ACCEPTED
            else:
                step = optin.decline(intro.state, seats, position)
                repeat = before is optin.Answer.DECLINED
            if not step.changed:
                if repeat:
                    return AnswerResult(Outcome.REPEATED, intro.state)
                if intro.state is optin.IntroState.EXPIRED:
                    return AnswerResult(Outcome.EXPIRED, intro.state)
                return AnswerResult(Outcome.CLOSED, intro.state)
            await self._apply(uow, intro.id, intro.intro, intro.correlation_id, step)
            outcome = Outcome.ACCEPTED if claim.action is LinkAction.ACCEPT else Outcome.DECLINED
            return AnswerResult(outcome, step.state)

    async def _apply(
        self,
        uow: NotifierUnitOfWork,
        intro_id: UUID,
        intro: IntroData,
        correlation_id: str,
        step: optin.Step,
    ) -> None:
        now = self._clock.now()
        # New asks (helpers after the seekers' yes) get the full time to answer.
        await uow.intros.save_step(
            intro_id, step.state, step.seats, now + self._ask_ttl if step.ask else None
        )
        if step.state in (optin.IntroState.DECLINED, optin.IntroState.EXPIRED):
            await uow.deliveries.cancel_pending(intro_id)
        cause = JobCause(correlation_id, None)
        if step.ask:
            await schedule(
                uow, intro, DeliveryKind.ASK, step.ask, now=now, quiet=self._quiet, cause=cause
            )
        if step.introduce:
            await schedule(
                uow,
                intro,
                DeliveryKind.INTRO,
                step.introduce,
                now=now,
                quiet=self._quiet,
                cause=cause,
            )

    async def _unsubscribe(self, claim: LinkClaim) -> AnswerResult:
        """Opt the person out: nothing more is sent to them, open asks count as a no, and the
        matcher is told (contact.opted_out.v1) so it proposes them no more."""
        async with self._store.unit_of_work() as uow:
            # Serialised with their erasure: after it, the tombstone is seen and nothing stored.
            await uow.people.lock_person(claim.source, claim.external_id)
            if await uow.people.erased([(claim.source, claim.external_id)]):
                return AnswerResult(Outcome.ERASED)
            first_time = await uow.people.opt_out(claim.source, claim.external_id)
            if first_time:
                await uow.outbox.enqueue(
                    [
                        ContactOptedOut(
                            source="notifier",
                            # Opaque: a correlation id is logged and travels in headers.
                            correlation_id=f"unsubscribe-{uuid.uuid4()}",
                            data=OptOutData(source=claim.source, external_id=claim.external_id),
                        )
                    ]
                )
            await self.withdraw(uow, claim.source, claim.external_id)
        return AnswerResult(Outcome.UNSUBSCRIBED if first_time else Outcome.REPEATED)

    async def withdraw(
        self,
        uow: NotifierUnitOfWork,
        source: str,
        external_id: str,
        *,
        only_with: set[tuple[str, str]] | None = None,
    ) -> None:
        """The person's open asks count as a no, and nothing pending is sent to them (an
        unsubscribe, an opt-out or an erasure; the caller records which). With `only_with`,
        only in introductions that also include one of those people (a merge)."""
        for intro_id in await uow.intros.open_intros_of(source, external_id):
            intro = await uow.intros.lock(intro_id)
            if intro is None:
                continue
            people = intro.intro.participants
            if only_with is not None and not any(
                (p.source, p.external_id) in only_with for p in people
            ):
                continue
            seats = await uow.intros.seats(intro_id)
            positions = [
                s.position
                for s in seats
                if (people[s.position].source, people[s.position].external_id)
                == (source, external_id)
            ]
            for position in positions:
                step = optin.decline(intro.state, seats, position)
                if step.changed:
                    await self._apply(uow, intro_id, intro.intro, intro.correlation_id, step)
            await uow.deliveries.cancel_pending(intro_id, positions)

    async def expire_due(self, limit: int = 100) -> int:
        """Expire introductions whose asks went unanswered; return how many."""
        expired = 0
        while True:
            async with self._store.unit_of_work() as uow:
                due = await uow.intros.lock_due_for_expiry(self._clock.now(), limit)
                for intro_id in due:
                    seats = await uow.intros.seats(intro_id)
                    step = optin.expire(optin.IntroState.ASKED, seats)
                    await uow.intros.save_step(intro_id, step.state, step.seats, None)
                    await uow.deliveries.cancel_pending(intro_id)
            expired += len(due)
            metrics.ANSWERS.labels("expired").inc(len(due))
            if len(due) < limit:
                return expired

    async def run_expiry(self, interval: float) -> None:
        while True:
            try:
                await self.expire_due()
            except Exception as exc:  # noqa: BLE001 - the sweep must outlive database outages
                log.warning("expiry sweep failed, retrying: %r", exc)
            await asyncio.sleep(interval)
