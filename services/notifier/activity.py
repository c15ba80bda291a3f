"""What operators read and do about introductions and deliveries (the console,
services/console/): introductions per week by state, one person's introductions and answers,
deliveries parked or failed with the provider's last word, and a parked delivery's retry.

Read-only statements for the console live here rather than in services/notifier/store/ (the
delivery path's own); a retry is the one `roac deliveries retry` makes
(`scheduling.requeue_parked`): the delivery is made pending with a fresh budget of attempts and
its job queued through the outbox in the same transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from services.notifier.scheduling import JobCause, requeue_parked
from services.notifier.store.intros import SEATS_JSON_SQL
from services.notifier.store.uow import NotifierStore

STATES = ("asked", "accepted", "introduced", "declined", "expired", "failed")


@dataclass
class Counts:
    """One week's (or one round's week's) introductions by state, and their check-ins."""

    by_state: dict[str, int] = field(default_factory=dict)
    answered: int = 0
    met: int = 0

    def add(self, state: str, count: int, answered: int, met: int) -> None:
        self.by_state[state] = self.by_state.get(state, 0) + count
        self.answered += answered
        self.met += met

    def as_dict(self) -> dict[str, int]:
        states = {state: self.by_state.get(state, 0) for state in STATES}
        return {"total": sum(states.values()), **states, "answered": self.answered, "met": self.met}


def week_start(moment: datetime) -> datetime:
    """Monday 00:00 UTC of the week holding `moment`."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


class Activity:
    def __init__(self, pool: asyncpg.Pool, store: NotifierStore) -> None:
        self._pool = pool
        self._store = store

    async def weekly(
        self, weeks: int, now: datetime | None = None, by_round: bool = False
    ) -> dict[str, list[dict[str, Any]]]:
        """Introductions created in each of the last `weeks` weeks (Monday to Sunday, UTC),
        oldest first, counted by the state each is in now, with how many of them someone's
        check-in was answered about (`answered`: we met, didn't happen, not for me, or not yet
        twice) and how many someone said "we met" to (`met`); every week listed, empty ones
        too. With `by_round`, the same counts per round that made them (`round`: null for live
        matches), for the weeks that have any."""
        first = week_start(now or datetime.now(UTC)) - timedelta(weeks=weeks - 1)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT date_trunc('week', i.created_at AT TIME ZONE 'UTC') AS week,
                       i.intro ->> 'round_id' AS round, i.state, count(*) AS n,
                       count(c.intro_id) AS answered, count(*) FILTER (WHERE c.met) AS met
                FROM notifier.intros i
                LEFT JOIN (
                    -- A check-in comes after its introduction was made: none older than `first`.
                    SELECT intro_id, bool_or(state = 'met') AS met FROM notifier.checkins
                    WHERE state IN ('met', 'didnt_happen', 'not_for_me', 'still_not_yet')
                      AND introduced_at >= $1
                    GROUP BY intro_id
                ) AS c ON c.intro_id = i.id
                WHERE i.created_at >= $1
                GROUP BY 1, 2, 3
                """,
                first,
            )
        totals: dict[datetime, Counts] = {}
        per_round: dict[tuple[datetime, str | None], Counts] = {}
        for r in rows:
            week = r["week"].replace(tzinfo=UTC)
            for counts in (
                totals.setdefault(week, Counts()),
                per_round.setdefault((week, r["round"]), Counts()),
            ):
                counts.add(r["state"], r["n"], r["answered"], r["met"])
        result: dict[str, list[dict[str, Any]]] = {
            "weeks": [
                {"week": start.date(), **totals.get(start, Counts()).as_dict()}
                for start in (first + timedelta(weeks=index) for index in range(weeks))
            ]
        }
        if by_round:
            result["rounds"] = [
                {"week": week.date(), "round": round_id, **counts.as_dict()}
                for (week, round_id), counts in sorted(
                    per_round.items(), key=lambda item: (item[0][0], item[0][1] or "")
                )
            ]
        return result

    async def person_intros(
        self,
        source: str,
        external_id: str,
        limit: int,
        before: datetime | None,
        before_id: UUID | None = None,
    ) -> list[dict[str, Any]]:
        """The introductions this person has a seat in, newest first (ties by id), each with
        every participant's answer; a page continues after (`before`, `before_id`)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""
                SELECT i.id, i.state, i.intro, i.created_at, i.updated_at,
                       {SEATS_JSON_SQL} AS seats
                FROM notifier.intros i
                WHERE i.id IN (SELECT intro_id FROM notifier.intro_seats
                               WHERE source = $1 AND external_id = $2)
                  AND ($4::timestamptz IS NULL
                       OR i.created_at < $4
                       OR (i.created_at = $4 AND $5::uuid IS NOT NULL AND i.id < $5))
                ORDER BY i.created_at DESC, i.id DESC
                LIMIT $3
                """,  # noqa: S608 - constant fragments
                source,
                external_id,
                limit,
                before,
                before_id,
            )
        return [_intro(r) for r in rows]

    async def deliveries(
        self, status: str, limit: int, before: datetime | None
    ) -> list[dict[str, Any]]:
        """Deliveries in `status` (parked: out of attempts; failed: refused for good), the most
        recently changed first, with the last attempt's outcome and the provider's reason."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT d.id, d.proposal_id, d.kind, d.channel, d.status, d.attempts,
                       d.recipient_source, d.recipient_external_id, d.last_error, d.created_at,
                       d.updated_at, a.outcome, a.detail, a.at
                FROM notifier.deliveries d
                LEFT JOIN LATERAL (
                    SELECT outcome, detail, at FROM notifier.delivery_attempts
                    WHERE delivery_id = d.id ORDER BY attempt DESC LIMIT 1
                ) AS a ON true
                WHERE d.status = $1 AND ($3::timestamptz IS NULL OR d.updated_at < $3)
                ORDER BY d.updated_at DESC, d.id
                LIMIT $2
                """,
                status,
                limit,
                before,
            )
        return [
            {
                "id": r["id"],
                "proposal_id": r["proposal_id"],
                "kind": r["kind"],
                "channel": r["channel"],
                "status": r["status"],
                "attempts": r["attempts"],
                "recipient": {
                    "source": r["recipient_source"],
                    "external_id": r["recipient_external_id"],
                },
                "reason": r["detail"] or r["last_error"],
                "last_outcome": r["outcome"],
                "last_attempt_at": r["at"],
                "created_at": r["created_at"],
                "updated_at": r["updated_at"],
            }
            for r in rows
        ]

    async def counts(self) -> dict[str, int]:
        """Deliveries parked and failed, in all."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT status, count(*) AS n FROM notifier.deliveries
                WHERE status IN ('parked', 'failed') GROUP BY status
                """
            )
        found = {r["status"]: int(r["n"]) for r in rows}
        return {"parked": found.get("parked", 0), "failed": found.get("failed", 0)}

    async def retry(self, delivery_ids: list[UUID] | None, correlation_id: str) -> list[UUID]:
        """Give these parked deliveries (None: every parked one) a fresh budget of attempts and
        queue them; return those retried (one no longer parked is left alone)."""
        cause = JobCause(correlation_id, None)
        retried: list[UUID] = []
        async with self._store.unit_of_work() as uow:
            if delivery_ids is None:
                delivery_ids = [d.id for d in await uow.deliveries.parked()]
            for delivery_id in delivery_ids:
                reset = await requeue_parked(uow, delivery_id, cause)
                if reset is not None:
                    retried.append(reset.id)
        return retried


def _intro(r: asyncpg.Record) -> dict[str, Any]:
    intro = r["intro"] or {}
    seats = r["seats"]
    if isinstance(seats, str):
        seats = json.loads(seats)
    return {
        "id": r["id"],
        "state": r["state"],
        "reason": intro.get("reason"),
        "topics": [t.get("topic") for t in intro.get("topics", [])],
        "round": intro.get("round_id"),
        "participants": [{**seat, "name": _name_of(intro, seat)} for seat in (seats or [])],
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
    }


def _name_of(intro: dict[str, Any], seat: dict[str, Any]) -> str | None:
    for person in intro.get("participants", []):
        if (
            person.get("source") == seat["source"]
            and person.get("external_id") == seat["external_id"]
        ):
            name = person.get("name")
            return name if isinstance(name, str) else None
    return None
