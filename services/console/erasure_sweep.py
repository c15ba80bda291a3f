"""The audit list's erasure sweep: a person erased through the API (an integration's
`DELETE /v1/contacts/{source}/{id}` on ingest) is forgotten by the console's audit list too.

The console hears no events (it has no broker connection and owns no domain data), so it asks:
every ROAC_CONSOLE_ERASURE_SWEEP_SECONDS (600) it takes the people the audit rows name and asks
the matcher, through its API with the console's key, whether it still knows each one
(`GET /v1/contacts/{source}/{id}/identity`). The matcher answers 404 "There is no such
identity." for a person it erased (it deletes every identity of theirs) and 200 for anyone it
holds, a person merged into another included (their identity now points to the surviving
contact): only the 404 with that detail means "forget them", so a matcher that is down, failing
(5xx), refusing the key (401/403) or answering from some other route changes nothing, and the
person is asked about again next sweep. Each forgotten person's mentions become "an erased
person" by the same rule as an erasure through the console (services/console/audit_people.py).

Bounded: at most PEOPLE_PER_SWEEP people per sweep, one question at a time with a pause
between (at most QUESTIONS_PER_SECOND), walking a longer list from sweep to sweep by a cursor;
a sweep stops at the first few questions in a row that get no answer (the matcher is down: no
point waiting on a timeout for each of the rest). Logs carry counts only, never an id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from services.console.audit_people import ref_of
from services.console.clients import ApiError, Apis
from services.console.metrics import AUDIT_PEOPLE_FORGOTTEN, AUDIT_PEOPLE_UNANSWERED

log = logging.getLogger("roac.console.erasure_sweep")

PEOPLE_PER_SWEEP = 1_000
QUESTIONS_PER_SECOND = 20.0
# Questions in a row without an answer after which a sweep gives up until the next one.
UNANSWERED_IN_A_ROW_TO_STOP = 3
# The matcher's 404 for an identity it does not hold (services/matcher/contact_routes.py);
# a 404 without it (a wrong URL, another route) proves nothing.
NO_SUCH_IDENTITY = "There is no such identity."


class Answer(Enum):
    KNOWN = "known"  # the matcher holds the person (merged into another included)
    GONE = "gone"  # it holds no identity by that (source, external_id): erased
    UNANSWERED = "unanswered"  # no answer to go by: ask again next sweep


def answer_of(status: int, detail: str) -> Answer:
    """What the matcher's answer to the identity question says about the person."""
    if status == 200:
        return Answer.KNOWN
    if status == 404 and detail == NO_SUCH_IDENTITY:
        return Answer.GONE
    return Answer.UNANSWERED


def to_forget(answers: Mapping[str, Answer]) -> list[str]:
    """The people whose every mention is to be replaced: those the matcher no longer knows."""
    return [person for person, answer in answers.items() if answer is Answer.GONE]


def next_cursor(asked: list[str], batch: int, complete: bool, cursor: str | None) -> str | None:
    """Where the next sweep starts: after the last person asked when this sweep asked a full
    batch; from the start when it reached the end of the list; where this one started when it
    gave up early (the matcher did not answer), so nobody is skipped."""
    if not complete:
        return cursor
    return asked[-1] if asked and len(asked) >= batch else None


@dataclass(frozen=True)
class SweepCounts:
    asked: int
    forgotten: int
    unanswered: int


Ask = Callable[[str, str], Awaitable[Answer]]


class AuditPeople(Protocol):
    """What the sweep needs of the audit list (services/console/accounts.py's Accounts)."""

    async def audited_people(self, after: str | None, limit: int) -> list[str]: ...

    async def forget_person(self, person: str) -> int: ...


def asking_the_matcher(apis: Apis) -> Ask:
    """The identity question, put to the matcher's API with the console's key."""

    async def ask(source: str, external_id: str) -> Answer:
        try:
            await apis.identity(source, external_id)
        except ApiError as exc:
            return answer_of(exc.status, exc.detail)
        return Answer.KNOWN

    return ask


class AuditErasureSweep:
    def __init__(
        self,
        accounts: AuditPeople,
        ask: Ask,
        *,
        interval: float,
        people_per_sweep: int = PEOPLE_PER_SWEEP,
        questions_per_second: float = QUESTIONS_PER_SECOND,
    ) -> None:
        self._accounts = accounts
        self._ask = ask
        self._interval = interval
        self._batch = people_per_sweep
        self._pause = 1.0 / questions_per_second
        self._cursor: str | None = None

    async def sweep_once(self) -> SweepCounts:
        people = await self._accounts.audited_people(self._cursor, self._batch)
        answers: dict[str, Answer] = {}
        unanswered_in_a_row = 0
        complete = True
        for person in people:
            ref = ref_of(person)
            if ref is None:
                continue
            if answers:
                await asyncio.sleep(self._pause)
            answers[person] = answer = await self._ask(*ref)
            unanswered_in_a_row = unanswered_in_a_row + 1 if answer is Answer.UNANSWERED else 0
            if unanswered_in_a_row >= UNANSWERED_IN_A_ROW_TO_STOP:
                complete = False
                break
        self._cursor = next_cursor(people, self._batch, complete, self._cursor)
        forgotten = to_forget(answers)
        for person in forgotten:
            await self._accounts.forget_person(person)
        unanswered = sum(1 for a in answers.values() if a is Answer.UNANSWERED)
        AUDIT_PEOPLE_FORGOTTEN.inc(len(forgotten))
        AUDIT_PEOPLE_UNANSWERED.inc(unanswered)
        return SweepCounts(len(answers), len(forgotten), unanswered)

    async def run_forever(self) -> None:
        """A sweep now (a console restarted more often than the interval still sweeps), then
        one every interval; a failed sweep (the database) is logged and tried again."""
        while True:
            try:
                counts = await self.sweep_once()
                log.info(
                    "audit erasure sweep: asked about %d people, forgot %d, %d unanswered",
                    counts.asked,
                    counts.forgotten,
                    counts.unanswered,
                )
            except Exception as exc:  # noqa: BLE001 - the loop must outlive database outages
                log.warning(
                    "audit erasure sweep failed, retrying in %.0fs: %s",
                    self._interval,
                    type(exc).__name__,
                )
            await asyncio.sleep(self._interval)
