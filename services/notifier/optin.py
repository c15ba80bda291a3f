"""The introduction's life, as plain Python: who is asked when, and what an answer changes.

Intro states: `asked` (asks out, waiting for answers), `accepted` (everyone said yes: the
introduction is being delivered), `introduced` (delivered to everyone), `declined`, `expired`,
`failed` (a message could not be delivered on any channel).

Participant answers: `waiting` (not asked yet: a helper waits for the seeker's yes), `asked`,
`accepted`, `declined`, `expired`.

Direct mode skips the asks. In double opt-in mode everyone is asked at once, except in a
seek/offer match: then the seekers are asked first and the helpers only once the seekers said
yes, so a helper is never bothered for someone who is no longer looking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from shared.events import IntroData, TopicRelation


class IntroState(StrEnum):
    ASKED = "asked"
    ACCEPTED = "accepted"
    INTRODUCED = "introduced"
    DECLINED = "declined"
    EXPIRED = "expired"
    FAILED = "failed"


class Answer(StrEnum):
    WAITING = "waiting"
    ASKED = "asked"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"


class Role(StrEnum):
    PEER = "peer"
    SEEKER = "seeker"
    HELPER = "helper"


OPEN_ANSWERS = frozenset({Answer.WAITING, Answer.ASKED})
# An introduction under way (asking, or being delivered): what a person's withdrawal or erasure
# closes (the stores' SQL uses this tuple: services/notifier/store/rules.py).
OPEN_STATES = (IntroState.ASKED, IntroState.ACCEPTED)


@dataclass(frozen=True)
class Seat:
    position: int
    role: Role
    answer: Answer


@dataclass(frozen=True)
class Step:
    """What a transition decided: the new state and answers, and who to message now."""

    state: IntroState
    seats: tuple[Seat, ...]
    ask: tuple[int, ...] = ()
    introduce: tuple[int, ...] = ()
    changed: bool = True


def roles(intro: IntroData) -> tuple[Role, ...]:
    seekers = {
        (t.seeker.source, t.seeker.external_id)
        for t in intro.topics
        if t.relation is TopicRelation.SEEKS_OFFERS and t.seeker is not None
    }
    found = []
    for p in intro.participants:
        if not seekers:
            found.append(Role.PEER)
        else:
            found.append(Role.SEEKER if (p.source, p.external_id) in seekers else Role.HELPER)
    return tuple(found)


def start(intro: IntroData, *, double_opt_in: bool) -> Step:
    everyone = tuple(range(len(intro.participants)))
    seat_roles = roles(intro)
    if not double_opt_in:
        seats = tuple(
            Seat(i, r, Answer.ACCEPTED) for i, r in zip(everyone, seat_roles, strict=True)
        )
        return Step(IntroState.ACCEPTED, seats, introduce=everyone)
    seekers_first = Role.SEEKER in seat_roles and Role.HELPER in seat_roles
    seats = tuple(
        Seat(i, r, Answer.WAITING if seekers_first and r is Role.HELPER else Answer.ASKED)
        for i, r in zip(everyone, seat_roles, strict=True)
    )
    return Step(
        IntroState.ASKED, seats, ask=tuple(s.position for s in seats if s.answer is Answer.ASKED)
    )


def accept(state: IntroState, seats: Sequence[Seat], position: int) -> Step:
    """A yes. Repeating it, or answering a closed introduction, changes nothing."""
    current = {s.position: s for s in seats}
    if state is not IntroState.ASKED or current[position].answer is not Answer.ASKED:
        return Step(state, tuple(seats), changed=False)
    current[position] = replace(current[position], answer=Answer.ACCEPTED)
    updated = tuple(current[i] for i in sorted(current))
    if all(s.answer is Answer.ACCEPTED for s in updated):
        return Step(IntroState.ACCEPTED, updated, introduce=tuple(sorted(current)))
    seekers_open = any(s.role is Role.SEEKER and s.answer is not Answer.ACCEPTED for s in updated)
    if not seekers_open:
        # Every seeker said yes: now ask the helpers who were waiting.
        asked = tuple(s.position for s in updated if s.answer is Answer.WAITING)
        updated = tuple(
            replace(s, answer=Answer.ASKED) if s.position in asked else s for s in updated
        )
        return Step(IntroState.ASKED, updated, ask=asked)
    return Step(IntroState.ASKED, updated)


def decline(state: IntroState, seats: Sequence[Seat], position: int) -> Step:
    """A no ends the introduction; nobody else is told who said no (nobody is told anything)."""
    current = {s.position: s for s in seats}
    if state is not IntroState.ASKED or current[position].answer not in OPEN_ANSWERS:
        return Step(state, tuple(seats), changed=False)
    current[position] = replace(current[position], answer=Answer.DECLINED)
    return Step(IntroState.DECLINED, tuple(current[i] for i in sorted(current)))


def expire(state: IntroState, seats: Sequence[Seat]) -> Step:
    if state is not IntroState.ASKED:
        return Step(state, tuple(seats), changed=False)
    updated = tuple(
        replace(s, answer=Answer.EXPIRED) if s.answer in OPEN_ANSWERS else s for s in seats
    )
    return Step(IntroState.EXPIRED, updated)
