"""The use cases of check-ins ("did you meet?"): the sweep that sends the ones whose time came
and expires those left unanswered, and the answers and ratings from their signed links. The
decisions are services/notifier/checkins.py's; this module reads, asks there and writes.

- **Sending**: a periodic sweep (like the expiry of asks, every ROAC_EXPIRY_SWEEP_SECONDS)
  takes the waiting check-ins whose time came, locks each introduction and then the check-in,
  skips people erased or opted out (and introductions an erasure closed), and schedules one
  delivery of kind `checkin` (or `checkin_again` after a "not yet") to that one person: from
  there it is a delivery like any other (channels in order, retries, quiet hours). The delivery
  row's key (introduction, kind, person) and the check-in's state make it at most once.
- **Answers**: a click locks the introduction, then the check-in, and steps it. An answer for
  good (met, didn't happen, not for me) and a rating after *we met* are published as
  `intro.feedback_given.v1` through the outbox, which the matcher applies to its feedback
  (scoring's meetings, "never this group again").

A link of an erased person does nothing and says nothing about it (as answers.py does).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from prometheus_client import Counter

from services.notifier import checkins
from services.notifier.checkins import CheckinState, Reply
from services.notifier.clock import Clock
from services.notifier.links import InvalidLink, LinkAction, LinkClaim, LinkKeyring, LinkMaker
from services.notifier.optin import IntroState
from services.notifier.planning import QuietHours
from services.notifier.scheduling import JobCause, schedule
from shared.erasure import ERASED
from shared.events import CheckinAnswer, IntroFeedbackData, IntroFeedbackGiven

if TYPE_CHECKING:
    from services.notifier.store.rows import IntroRecord
    from services.notifier.store.uow import NotifierStore, NotifierUnitOfWork

log = logging.getLogger("roac.notifier")

CHECKINS = Counter(
    "roac_notifier_checkins_total",
    "Check-ins ('did you meet?'): sent, skipped (erased or opted out), expired, and answers "
    "by what they did.",
    ["event"],
)

REPLIES = {
    LinkAction.CHECKIN_MET: Reply.MET,
    LinkAction.CHECKIN_NOT_YET: Reply.NOT_YET,
    LinkAction.CHECKIN_DIDNT_HAPPEN: Reply.DIDNT_HAPPEN,
    LinkAction.CHECKIN_NOT_FOR_ME: Reply.NOT_FOR_ME,
}
ACTIONS = frozenset({*REPLIES, LinkAction.CHECKIN_RATE})
# Answer links stay valid a week past the answer window (a late click says "expired").
LINK_SECONDS = int(checkins.ANSWER_WINDOW.total_seconds()) + LinkMaker.ANSWER_GRACE_SECONDS


class Result:
    """What a click did, beyond checkins.Verdict: the link was bad, or its person erased."""

    INVALID = "invalid"
    EXPIRED = "expired"
    ERASED = "erased"


@dataclass(frozen=True)
class CheckinResult:
    outcome: str  # a checkins.Verdict value, or a Result
    state: CheckinState | None = None
    reply: Reply | None = None
    # After "we met": the link of the rating form on the page that follows.
    rate_url: str | None = None


class CheckIns:
    def __init__(
        self,
        store: NotifierStore,
        *,
        keyring: LinkKeyring,
        links: LinkMaker,
        after: timedelta,
        quiet: QuietHours,
        clock: Clock,
        batch: int = 100,
    ) -> None:
        """`after` (ROAC_CHECKIN_AFTER_SECONDS): how long after the introduction a check-in is
        sent when its pool set nothing, and how long after a "not yet" it is sent again."""
        self._store = store
        self._keyring = keyring
        self._links = links
        self._after = after
        self._quiet = quiet
        self._clock = clock
        self._batch = batch

    # Sending and expiry

    async def send_due(self) -> int:
        """Schedule the check-ins whose time came (batch by batch); return how many were
        looked at."""
        seen = 0
        while True:
            now = self._clock.now()
            async with self._store.unit_of_work() as uow:
                due = await uow.checkins.due(now, self._after, self._batch)
                # Introductions are locked in id order, as everywhere (no deadlock).
                for intro_id, position in sorted(due):
                    await self._send_one(uow, intro_id, position)
            seen += len(due)
            if len(due) < self._batch:
                return seen

    async def _send_one(self, uow: NotifierUnitOfWork, intro_id: UUID, position: int) -> None:
        intro = await uow.intros.lock(intro_id)
        row = await uow.checkins.lock(intro_id, position)
        if intro is None or row is None:
            return
        people = intro.intro.participants
        person = people[position]
        ref = (person.source, person.external_id)
        # An introduction naming an erased person sends nothing more to anyone.
        erased = any(p.source == ERASED for p in people) or bool(
            await uow.people.erased([(p.source, p.external_id) for p in people])
        )
        opted_out = bool(await uow.people.opted_out([ref]))
        send = checkins.when_due(
            row.state,
            introduced=intro.state is IntroState.INTRODUCED,
            erased=erased,
            opted_out=opted_out,
        )
        if send is None:
            return
        now = self._clock.now()
        await uow.checkins.save(intro_id, position, send.state, now=now, sent=send.kind is not None)
        if send.kind is None:
            CHECKINS.labels("skipped").inc()
            return
        await schedule(
            uow,
            intro.intro,
            send.kind,
            [position],
            now=now,
            quiet=self._quiet,
            cause=JobCause(intro.correlation_id, None),
        )
        CHECKINS.labels("sent").inc()

    async def expire_due(self) -> int:
        before = self._clock.now() - checkins.ANSWER_WINDOW
        expired = 0
        while True:
            async with self._store.unit_of_work() as uow:
                count = await uow.checkins.expire(before, self._batch)
            expired += count
            CHECKINS.labels("expired").inc(count)
            if count < self._batch:
                return expired

    async def sweep(self) -> None:
        await self.send_due()
        await self.expire_due()

    async def run(self, interval: float) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - the sweep must outlive database outages
                log.warning("check-in sweep failed, retrying: %r", exc)
            await asyncio.sleep(interval)

    # Links

    def claim(self, token: str) -> LinkClaim | CheckinResult | None:
        """The check-in claim of `token`; a result for a bad or expired one; None when the
        token is valid but not a check-in's (an ask's, an unsubscribe: answers.py's)."""
        try:
            claim = self._keyring.verify(token, self._clock.now().timestamp())
        except InvalidLink as exc:
            return CheckinResult(Result.EXPIRED if str(exc) == "expired" else Result.INVALID)
        if claim.action not in ACTIONS:
            return None
        if claim.intro_id is None:
            return CheckinResult(Result.INVALID)
        return claim

    def owns(self, token: str) -> bool:
        """Whether `token` is a check-in's link, valid or expired (its page explains which)."""
        return _looks_like_checkin(self._keyring, token)

    async def inspect(self, token: str) -> LinkClaim | CheckinResult:
        """For the confirmation page: the claim, or why there is nothing to confirm."""
        found = self.claim(token)
        if found is None:
            return CheckinResult(Result.INVALID)
        if isinstance(found, CheckinResult):
            return found
        async with self._store.unit_of_work() as uow:
            if await uow.people.erased([(found.source, found.external_id)]):
                return CheckinResult(Result.ERASED)
        return found

    async def answer(self, token: str, rating: int | None = None) -> CheckinResult:
        """A POST on a check-in link: one of the four answers, or (the rating link) a rating."""
        found = self.claim(token)
        if not isinstance(found, LinkClaim):
            return found or CheckinResult(Result.INVALID)
        result = await self._act(found, rating)
        CHECKINS.labels(f"answer_{result.outcome}").inc()
        return result

    async def _act(self, claim: LinkClaim, rating: int | None) -> CheckinResult:
        assert claim.intro_id is not None  # checked by `claim`
        now = self._clock.now()
        async with self._store.unit_of_work() as uow:
            intro = await uow.intros.lock(claim.intro_id)
            # After the introduction's lock: an erasure naming them has committed or waits.
            if await uow.people.erased([(claim.source, claim.external_id)]):
                return CheckinResult(Result.ERASED)
            if intro is None:
                return CheckinResult(Result.INVALID)
            position = _position(intro, claim)
            row = await uow.checkins.lock(intro.id, position) if position is not None else None
            if position is None or row is None:
                return CheckinResult(Result.INVALID)
            if claim.action is LinkAction.CHECKIN_RATE:
                if rating is None:
                    return CheckinResult(Result.INVALID, row.state)
                step = checkins.rate(row.state, rating, rated=row.rating)
                reply = Reply.MET
            else:
                reply = REPLIES[claim.action]
                after = timedelta(seconds=row.after_seconds) if row.after_seconds else self._after
                step = checkins.answer(
                    row.state, reply, now=now, again_after=after, sent_at=row.sent_at
                )
            if step.state is not row.state or step.changed:
                await uow.checkins.save(
                    intro.id,
                    position,
                    step.state,
                    now=now,
                    answered=step.changed,
                    again_at=step.due_at,
                    rating=step.rating,
                )
            if step.feedback is not None:
                await uow.outbox.enqueue(
                    [_feedback(intro, claim, position, step.feedback, step.rating)]
                )
        rate_url = None
        rated = claim.action is LinkAction.CHECKIN_RATE or row.rating is not None
        if step.state is CheckinState.MET and not rated:
            rate_url = self._rate_url(claim, now.timestamp())
        return CheckinResult(step.verdict.value, step.state, reply, rate_url)

    def _rate_url(self, claim: LinkClaim, now: float) -> str:
        return self._links.url(
            LinkClaim(
                LinkAction.CHECKIN_RATE,
                claim.source,
                claim.external_id,
                int(now) + LINK_SECONDS,
                claim.intro_id,
            )
        )


def _position(intro: IntroRecord, claim: LinkClaim) -> int | None:
    return next(
        (
            i
            for i, p in enumerate(intro.intro.participants)
            if (p.source, p.external_id) == (claim.source, claim.external_id)
        ),
        None,
    )


def _feedback(
    intro: IntroRecord,
    claim: LinkClaim,
    position: int,
    outcome: CheckinAnswer,
    rating: int | None,
) -> IntroFeedbackGiven:
    return IntroFeedbackGiven(
        source="notifier",
        correlation_id=intro.correlation_id,
        data=IntroFeedbackData(
            source=claim.source,
            external_id=claim.external_id,
            proposal_id=intro.id,
            respondent=position,
            outcome=outcome,
            rating=rating,
        ),
    )


def _looks_like_checkin(keyring: LinkKeyring, token: str) -> bool:
    """An expired or bad token says nothing about its action; an expired check-in link is
    recognised by verifying it as of its own expiry."""
    try:
        claim = keyring.verify(token, 0)
    except InvalidLink:
        return False
    return claim.action in ACTIONS
