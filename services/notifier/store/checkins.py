"""Check-ins ("did you meet?", services/notifier/checkins.py): one row per participant of a
delivered introduction, keyed by the introduction and the seat, so nobody is asked twice for the
same introduction. Rows are created with the introduction's `introduced` state (`CREATE_SQL`,
run by `IntroStore.finish_if_delivered`); the sweep finds those whose time came, the answers
lock and step them, and expiry closes asks left unanswered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from services.notifier.checkins import ASKED, WAITING, CheckinState
from services.notifier.store.rules import sql_list

WAITING_SQL = sql_list(WAITING)
ASKED_SQL = sql_list(ASKED)

# The check-ins of the introductions in CTE `done` (id, intro) that were just delivered: one per
# seat, due after the proposal's `checkin_after_seconds` (a pool's) or the setting, counted
# from `$2`: the notifier's clock (services/notifier/clock.py), which the sweep compares with,
# not the database's (a test that moves the clock had check-ins due the moment they were made).
CREATE_SQL = """INSERT INTO notifier.checkins (intro_id, position, introduced_at, after_seconds)
            SELECT s.intro_id, s.position, $2::timestamptz,
                   (d.intro->>'checkin_after_seconds')::int
            FROM done d JOIN notifier.intro_seats s ON s.intro_id = d.id
            ON CONFLICT DO NOTHING"""

# Every check-in of introduction `i` as a JSON array (GET /v1/intros): the seat's position,
# state, rating and times; who it is, is the seat's (`participants`).
CHECKINS_JSON_SQL = """(SELECT json_agg(json_build_object(
                        'position', c.position, 'state', c.state, 'rating', c.rating,
                        'sent_at', c.sent_at, 'answered_at', c.answered_at) ORDER BY c.position)
                    FROM notifier.checkins c WHERE c.intro_id = i.id)"""


@dataclass(frozen=True, slots=True)
class CheckinRecord:
    intro_id: UUID
    position: int
    state: CheckinState
    introduced_at: datetime
    after_seconds: int | None
    again_at: datetime | None
    sent_at: datetime | None
    rating: int | None


def _row(r: asyncpg.Record) -> CheckinRecord:
    return CheckinRecord(
        intro_id=r["intro_id"],
        position=r["position"],
        state=CheckinState(r["state"]),
        introduced_at=r["introduced_at"],
        after_seconds=r["after_seconds"],
        again_at=r["again_at"],
        sent_at=r["sent_at"],
        rating=r["rating"],
    )


class CheckinStore:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def due(
        self, now: datetime, default_after: timedelta, limit: int
    ) -> list[tuple[UUID, int]]:
        """(introduction, seat) of waiting check-ins whose time came, oldest first (not
        locked: the caller locks the introduction, then the check-in, and looks again)."""
        rows = await self._conn.fetch(
            f"""
            SELECT intro_id, position FROM notifier.checkins
            WHERE state IN {WAITING_SQL}
              AND coalesce(again_at, introduced_at
                  + make_interval(secs => coalesce(after_seconds, $2::int))) <= $1
            ORDER BY introduced_at, intro_id, position
            LIMIT $3
            """,  # noqa: S608 - constant fragments
            now,
            int(default_after.total_seconds()),
            limit,
        )
        return [(r["intro_id"], r["position"]) for r in rows]

    async def lock(self, intro_id: UUID, position: int) -> CheckinRecord | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM notifier.checkins WHERE intro_id = $1 AND position = $2 FOR UPDATE",
            intro_id,
            position,
        )
        return _row(row) if row else None

    async def of_intro(self, intro_id: UUID) -> list[CheckinRecord]:
        rows = await self._conn.fetch(
            "SELECT * FROM notifier.checkins WHERE intro_id = $1 ORDER BY position", intro_id
        )
        return [_row(r) for r in rows]

    async def save(
        self,
        intro_id: UUID,
        position: int,
        state: CheckinState,
        *,
        now: datetime,
        sent: bool = False,
        answered: bool = False,
        again_at: datetime | None = None,
        rating: int | None = None,
    ) -> None:
        await self._conn.execute(
            """
            UPDATE notifier.checkins
            SET state = $3, updated_at = now(),
                sent_at = CASE WHEN $5 THEN $4 ELSE sent_at END,
                answered_at = CASE WHEN $6 THEN $4 ELSE answered_at END,
                again_at = coalesce($7, again_at),
                rating = coalesce($8, rating)
            WHERE intro_id = $1 AND position = $2
            """,
            intro_id,
            position,
            state.value,
            now,
            sent,
            answered,
            again_at,
            rating,
        )

    async def expire(self, before: datetime, limit: int) -> int:
        """Asks sent before `before` and still unanswered expire; returns how many."""
        rows = await self._conn.fetch(
            f"""
            UPDATE notifier.checkins SET state = 'expired', updated_at = now()
            WHERE (intro_id, position) IN (
                SELECT intro_id, position FROM notifier.checkins
                WHERE state IN {ASKED_SQL} AND sent_at < $1
                ORDER BY sent_at LIMIT $2 FOR UPDATE SKIP LOCKED
            )
            RETURNING intro_id
            """,  # noqa: S608 - constant fragments
            before,
            limit,
        )
        return len(rows)

    async def counts(self, intro_ids: Sequence[UUID]) -> dict[str, int]:
        """Check-ins of these introductions by state (tests, operators)."""
        rows = await self._conn.fetch(
            "SELECT state, count(*) AS n FROM notifier.checkins "
            "WHERE intro_id = ANY($1::uuid[]) GROUP BY state",
            list(intro_ids),
        )
        return {r["state"]: r["n"] for r in rows}
