"""Introductions and their seats (each participant's answer): recorded, locked, stepped through
their lifecycle (services/notifier/optin.py), closed once delivered, listed for operators."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.notifier.optin import Answer, IntroState, Role, Seat
from services.notifier.store.checkins import CHECKINS_JSON_SQL
from services.notifier.store.checkins import CREATE_SQL as CHECKINS_CREATE_SQL
from services.notifier.store.rows import IntroRecord, NewIntro, intro_row
from services.notifier.store.rules import OPEN_STATES_SQL, UNSENT_SQL
from shared.events import IntroData

# Every seat of introduction `i` with its answer, in position order, as a JSON array (the
# operator API's and the console's lists).
SEATS_JSON_SQL = """(SELECT json_agg(json_build_object(
                        'source', s.source, 'external_id', s.external_id, 'role', s.role,
                        'answer', s.answer, 'answered_at', s.answered_at) ORDER BY s.position)
                    FROM notifier.intro_seats s WHERE s.intro_id = i.id)"""


class IntroStore:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(self, intros: Sequence[NewIntro]) -> set[UUID]:
        """Record new introductions; return the ids recorded now (not before)."""
        rows = await self._conn.fetch(
            """
            INSERT INTO notifier.intros
                (id, mode, state, intro, correlation_id, proposed_at, asked_until)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[],
                                 $6::timestamptz[], $7::timestamptz[])
            ON CONFLICT (id) DO NOTHING
            RETURNING id
            """,
            [n.intro.proposal_id for n in intros],
            [n.mode for n in intros],
            [n.state.value for n in intros],
            [n.intro.model_dump(mode="json") for n in intros],
            [n.correlation_id for n in intros],
            [n.proposed_at for n in intros],
            [n.asked_until for n in intros],
        )
        return {r["id"] for r in rows}

    async def insert_seats(self, seated: Sequence[tuple[IntroData, Sequence[Seat]]]) -> None:
        rows = [
            (intro.proposal_id, s.position, intro.participants[s.position], s)
            for intro, seats in seated
            for s in seats
        ]
        await self._conn.execute(
            """
            INSERT INTO notifier.intro_seats (intro_id, position, source, external_id, role, answer)
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],
                                 $6::text[])
            """,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2].source for r in rows],
            [r[2].external_id for r in rows],
            [r[3].role.value for r in rows],
            [r[3].answer.value for r in rows],
        )

    async def lock(self, intro_id: UUID) -> IntroRecord | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM notifier.intros WHERE id = $1 FOR UPDATE", intro_id
        )
        return intro_row(row) if row else None

    async def get(self, intro_id: UUID) -> IntroRecord | None:
        """Read without a lock (the language of a link's page)."""
        row = await self._conn.fetchrow("SELECT * FROM notifier.intros WHERE id = $1", intro_id)
        return intro_row(row) if row else None

    async def lock_many(self, intro_ids: Iterable[UUID]) -> None:
        """Lock introductions (in id order) before their deliveries' results are written: the
        lock order, and what makes two groups finishing one introduction see each other."""
        ids = sorted(set(intro_ids))
        if ids:
            await self._conn.execute(
                "SELECT 1 FROM notifier.intros WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
                ids,
            )

    async def seats(self, intro_id: UUID) -> list[Seat]:
        rows = await self._conn.fetch(
            "SELECT position, role, answer FROM notifier.intro_seats WHERE intro_id = $1 "
            "ORDER BY position",
            intro_id,
        )
        return [Seat(r["position"], Role(r["role"]), Answer(r["answer"])) for r in rows]

    async def save_step(
        self, intro_id: UUID, state: IntroState, seats: Sequence[Seat], asked_until: datetime | None
    ) -> None:
        await self._conn.execute(
            "UPDATE notifier.intros SET state = $2, asked_until = coalesce($3, asked_until), "
            "updated_at = now() WHERE id = $1",
            intro_id,
            state.value,
            asked_until,
        )
        await self._conn.execute(
            """
            UPDATE notifier.intro_seats AS s
            SET answer = u.answer,
                answered_at = CASE
                    WHEN s.answer <> u.answer AND u.answer IN ('accepted', 'declined', 'expired')
                    THEN now() ELSE s.answered_at END
            FROM unnest($2::int[], $3::text[]) AS u(position, answer)
            WHERE s.intro_id = $1 AND s.position = u.position
            """,
            intro_id,
            [s.position for s in seats],
            [s.answer.value for s in seats],
        )

    async def set_state(self, intro_id: UUID, state: IntroState) -> None:
        await self._conn.execute(
            "UPDATE notifier.intros SET state = $2, updated_at = now() WHERE id = $1",
            intro_id,
            state.value,
        )

    async def finish_if_delivered(self, intro_ids: Iterable[UUID], now: datetime) -> None:
        """An introduction is `introduced` once none of its introductions is left to send;
        then each participant's check-in starts waiting (services/notifier/checkins.py), from
        `now` (the service's clock)."""
        await self._conn.execute(
            f"""
            WITH done AS (
                UPDATE notifier.intros AS i SET state = 'introduced', updated_at = now()
                WHERE i.id = ANY($1::uuid[]) AND i.state = 'accepted' AND NOT EXISTS (
                    SELECT 1 FROM notifier.deliveries d
                    WHERE d.proposal_id = i.id AND d.kind = 'intro'
                      AND d.status IN {UNSENT_SQL}
                )
                RETURNING i.id, i.intro
            )
            {CHECKINS_CREATE_SQL}
            """,  # noqa: S608 - constant fragments
            sorted(set(intro_ids)),
            now,
        )

    async def lock_due_for_expiry(self, now: datetime, limit: int) -> list[UUID]:
        rows = await self._conn.fetch(
            """
            SELECT id FROM notifier.intros
            WHERE state = 'asked' AND asked_until < $1
            ORDER BY asked_until LIMIT $2
            FOR UPDATE SKIP LOCKED
            """,
            now,
            limit,
        )
        return [r["id"] for r in rows]

    async def open_intros_of(self, source: str, external_id: str) -> list[UUID]:
        rows = await self._conn.fetch(
            f"""
            SELECT DISTINCT s.intro_id FROM notifier.intro_seats s
            JOIN notifier.intros i ON i.id = s.intro_id
            WHERE s.source = $1 AND s.external_id = $2 AND i.state IN {OPEN_STATES_SQL}
            ORDER BY s.intro_id
            """,  # noqa: S608 - constant fragments
            source,
            external_id,
        )
        return [r["intro_id"] for r in rows]

    async def listing(
        self,
        *,
        state: str | None,
        limit: int,
        before: datetime | None,
        round_id: UUID | None = None,
    ) -> list[dict[str, Any]]:
        """`GET /v1/intros`: the newest first, each with its seats and deliveries."""
        rows = await self._conn.fetch(
            f"""
            SELECT i.id, i.mode, i.state, i.intro, i.created_at, i.updated_at, i.asked_until,
                   {SEATS_JSON_SQL} AS seats,
                   (SELECT json_agg(json_build_object(
                        'kind', d.kind, 'recipient', json_build_object(
                            'source', d.recipient_source, 'external_id', d.recipient_external_id),
                        'channel', d.channel, 'status', d.status, 'attempts', d.attempts,
                        'sent_at', d.sent_at) ORDER BY d.created_at, d.id)
                    FROM notifier.deliveries d WHERE d.proposal_id = i.id) AS deliveries,
                   {CHECKINS_JSON_SQL} AS checkins
            FROM notifier.intros i
            WHERE ($1::text IS NULL OR i.state = $1)
              AND ($3::timestamptz IS NULL OR i.created_at < $3)
              AND ($4::text IS NULL OR i.intro->>'round_id' = $4)
            ORDER BY i.created_at DESC, i.id
            LIMIT $2
            """,  # noqa: S608 - constant fragments
            state,
            limit,
            before,
            str(round_id) if round_id else None,
        )
        found = []
        for r in rows:
            intro = r["intro"] or {}
            found.append(
                {
                    "id": r["id"],
                    "mode": r["mode"],
                    "state": r["state"],
                    "score": intro.get("score"),
                    "reason": intro.get("reason"),
                    "topics": [t.get("topic") for t in intro.get("topics", [])],
                    "round": intro.get("round_id"),
                    "created_at": r["created_at"],
                    "updated_at": r["updated_at"],
                    "asks_expire_at": r["asked_until"],
                    "participants": json.loads(r["seats"]) if r["seats"] else [],
                    "deliveries": json.loads(r["deliveries"]) if r["deliveries"] else [],
                    "checkins": json.loads(r["checkins"]) if r["checkins"] else [],
                }
            )
        return found
