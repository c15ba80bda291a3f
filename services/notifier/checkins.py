"""The check-in's life ("did you meet?"), as plain Python: no database, no clock, no network.

A while after an introduction was delivered (ROAC_CHECKIN_AFTER_SECONDS, or the pool's
`checkin_after_days` carried in the proposal), each participant is asked once whether they met,
with one-click answers. Each participant has one check-in per introduction (a row keyed by the
introduction and their seat), so nobody is asked twice for the same introduction; the one
exception is the answer *not yet*, after which they are asked once more, as long later.

States:

- `due`: waiting for its time (`introduced_at + after`);
- `sent`: asked; `not_yet`: answered *not yet*, waiting to be asked again; `sent_again`: asked
  the second (and last) time;
- answered for good: `met`, `didnt_happen`, `not_for_me` (never this group again), or
  `still_not_yet` (a second *not yet*: nothing more is asked);
- `expired`: asked and not answered within `ANSWER_WINDOW`;
- `skipped`: never asked (the person opted out or was erased, or the introduction is no longer
  `introduced`).

What an answer changes is `answer`; what a sweep does with a row whose time came is `when_due`;
expiry is `expire`; the rating on the page that follows *we met* is `rate`. The service around
this (services/notifier/checkin_service.py) reads, asks here, writes and sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from shared.events import CheckinAnswer, DeliveryKind

# A check-in unanswered this long after it was sent expires (its links say so a week longer).
ANSWER_WINDOW = timedelta(days=30)


class CheckinState(StrEnum):
    DUE = "due"
    SENT = "sent"
    NOT_YET = "not_yet"
    SENT_AGAIN = "sent_again"
    MET = "met"
    DIDNT_HAPPEN = "didnt_happen"
    NOT_FOR_ME = "not_for_me"
    STILL_NOT_YET = "still_not_yet"
    EXPIRED = "expired"
    SKIPPED = "skipped"


class Reply(StrEnum):
    """The four one-click answers of a check-in message."""

    MET = "met"
    NOT_YET = "not_yet"
    DIDNT_HAPPEN = "didnt_happen"
    NOT_FOR_ME = "not_for_me"


# Waiting for their time to be sent (the sweep's work), and waiting for an answer.
WAITING = (CheckinState.DUE, CheckinState.NOT_YET)
ASKED = (CheckinState.SENT, CheckinState.SENT_AGAIN)
# Answered for good: the answer is recorded and nothing more is asked.
ANSWERED = {
    Reply.MET: CheckinState.MET,
    Reply.DIDNT_HAPPEN: CheckinState.DIDNT_HAPPEN,
    Reply.NOT_FOR_ME: CheckinState.NOT_FOR_ME,
}
# What the matcher is told (intro.feedback_given.v1); a "not yet" stays here.
FEEDBACK = {
    CheckinState.MET: CheckinAnswer.MET,
    CheckinState.DIDNT_HAPPEN: CheckinAnswer.DIDNT_HAPPEN,
    CheckinState.NOT_FOR_ME: CheckinAnswer.NOT_FOR_ME,
}
# The delivery kind of a check-in message, by the state it is sent from.
KIND = {CheckinState.DUE: DeliveryKind.CHECKIN, CheckinState.NOT_YET: DeliveryKind.CHECKIN_AGAIN}
KINDS = frozenset(KIND.values())


class Verdict(StrEnum):
    """What an answer or a rating did (the page shown says so)."""

    NOTED = "noted"  # a new answer, recorded
    ASK_AGAIN = "ask_again"  # not yet: asked once more later
    REPEATED = "repeated"  # the same answer again: nothing changes
    CLOSED = "closed"  # answered otherwise before: the first answer stands
    EXPIRED = "expired"  # too late
    INVALID = "invalid"  # nothing to answer (never sent, skipped, a rating without a meeting)


@dataclass(frozen=True)
class Step:
    """A check-in after an answer, a rating, a sweep or expiry: its new state, when it is due
    next (a "not yet"), and whether the matcher is told (`feedback`)."""

    verdict: Verdict
    state: CheckinState
    due_at: datetime | None = None
    feedback: CheckinAnswer | None = None
    rating: int | None = None

    @property
    def changed(self) -> bool:
        return self.verdict in (Verdict.NOTED, Verdict.ASK_AGAIN)


def due_at(introduced_at: datetime, after: timedelta, again_at: datetime | None = None) -> datetime:
    """When a waiting check-in is sent: `after` past the introduction, or the time a "not
    yet" set."""
    return again_at if again_at is not None else introduced_at + after


@dataclass(frozen=True)
class Send:
    """The sweep's decision for a waiting check-in whose time came."""

    state: CheckinState
    kind: DeliveryKind | None  # the message to send; None: nothing (skipped)


def when_due(
    state: CheckinState,
    *,
    introduced: bool,
    erased: bool,
    opted_out: bool,
) -> Send | None:
    """A waiting check-in whose time came: sent (`sent` or `sent_again`), or skipped when its
    person was erased or opted out, or its introduction is no longer `introduced` (an erasure
    closed it). None when it is not waiting (answered meanwhile, sent by another sweep)."""
    if state not in WAITING:
        return None
    if erased or opted_out or not introduced:
        return Send(CheckinState.SKIPPED, None)
    sent = CheckinState.SENT if state is CheckinState.DUE else CheckinState.SENT_AGAIN
    return Send(sent, KIND[state])


def answer(
    state: CheckinState,
    reply: Reply,
    *,
    now: datetime,
    again_after: timedelta,
    sent_at: datetime | None,
) -> Step:
    """A click on one of the four answers. The first answer for good stands (a second click,
    the same or another, changes nothing); a "not yet" asks once more `again_after` later, and
    a second "not yet" (or one clicked in the first message after the reminder went) closes it
    without another ask. An answer after the window (`ANSWER_WINDOW` past the last ask) is too
    late, unless it was already recorded."""
    if state in ANSWERED.values() or state is CheckinState.STILL_NOT_YET:
        same = ANSWERED.get(reply) is state or (
            reply is Reply.NOT_YET and state is CheckinState.STILL_NOT_YET
        )
        return Step(Verdict.REPEATED if same else Verdict.CLOSED, state)
    if state is CheckinState.EXPIRED:
        return Step(Verdict.EXPIRED, state)
    if state not in (*ASKED, CheckinState.NOT_YET):
        return Step(Verdict.INVALID, state)
    if state in ASKED and sent_at is not None and now > sent_at + ANSWER_WINDOW:
        return Step(Verdict.EXPIRED, CheckinState.EXPIRED)
    if reply is Reply.NOT_YET:
        if state is CheckinState.SENT:
            return Step(Verdict.ASK_AGAIN, CheckinState.NOT_YET, due_at=now + again_after)
        if state is CheckinState.NOT_YET:
            return Step(Verdict.REPEATED, state)
        return Step(Verdict.NOTED, CheckinState.STILL_NOT_YET)
    # An answer for good, also while waiting for the reminder (which is then not sent).
    final = ANSWERED[reply]
    return Step(Verdict.NOTED, final, feedback=FEEDBACK[final])


def rate(state: CheckinState, rating: int, *, rated: int | None) -> Step:
    """The optional 1 to 5 rating on the page that follows *we met*: once; the matcher gets the
    meeting again with its rating (the same respondent's feedback, replaced, not counted
    twice)."""
    if not 1 <= rating <= 5 or state is not CheckinState.MET:
        return Step(Verdict.INVALID, state)
    if rated is not None:
        return Step(Verdict.REPEATED, state, rating=rated)
    return Step(Verdict.NOTED, state, feedback=CheckinAnswer.MET, rating=rating)


def expire(state: CheckinState, sent_at: datetime | None, now: datetime) -> CheckinState:
    """An ask unanswered for `ANSWER_WINDOW` expires; anything else stays as it is."""
    if state in ASKED and sent_at is not None and now > sent_at + ANSWER_WINDOW:
        return CheckinState.EXPIRED
    return state
