"""Pools and rounds: the statements of `POST /v1/pools`, `/v1/rounds` and the round worker.
Runs on the connection (and transaction) of a matcher unit of work (`uow.rounds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.matcher.store.rows import PoolRow, RoundRow, ScheduledRound


def _round(r: asyncpg.Record) -> RoundRow:
    return RoundRow(
        id=r["id"],
        pool=r["pool"],
        group_size=r["group_size"],
        seed=r["seed"],
        serendipity=float(r["serendipity"]),
        dry_run=r["dry_run"],
        status=r["status"],
        worker=r["worker"],
        attempts=r["attempts"],
        stats=r["stats"],
        plan=r["plan"],
        error=r["error"],
        requested_at=r["requested_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


def _pool(r: asyncpg.Record) -> PoolRow:
    return PoolRow(
        name=r["name"],
        selector=r["selector"],
        group_size=r["group_size"],
        serendipity=float(r["serendipity"]),
        rules=r["rules"],
        every_seconds=r["every_seconds"],
        next_round_at=r["next_round_at"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        schedule=r["schedule"],
        checkin_after_days=r["checkin_after_days"],
    )


class RoundRecords:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def upsert_pool(self, pool: PoolRow) -> tuple[PoolRow, bool]:
        """Create or replace a pool, with the next_round_at its use case worked out; True when
        it was created."""
        row = await self._conn.fetchrow(
            """
            INSERT INTO matcher.pools AS p (name, selector, group_size, serendipity, rules,
                                            every_seconds, schedule, next_round_at,
                                            checkin_after_days)
            VALUES ($1, $2::jsonb, $3, $4, $5::jsonb, $6, $7::jsonb, $8, $9)
            ON CONFLICT (name) DO UPDATE SET
                selector = EXCLUDED.selector, group_size = EXCLUDED.group_size,
                serendipity = EXCLUDED.serendipity, rules = EXCLUDED.rules,
                every_seconds = EXCLUDED.every_seconds, schedule = EXCLUDED.schedule,
                next_round_at = EXCLUDED.next_round_at,
                checkin_after_days = EXCLUDED.checkin_after_days, updated_at = now()
            RETURNING *, (xmax = 0) AS created
            """,
            pool.name,
            pool.selector,
            pool.group_size,
            pool.serendipity,
            pool.rules,
            pool.every_seconds,
            pool.schedule,
            pool.next_round_at,
            pool.checkin_after_days,
        )
        return _pool(row), bool(row["created"])

    async def pool_for_update(self, name: str) -> PoolRow | None:
        """The pool, locked until the transaction ends (its replacement reads its schedule)."""
        row = await self._conn.fetchrow(
            "SELECT * FROM matcher.pools WHERE name = $1 FOR UPDATE", name
        )
        return _pool(row) if row else None

    async def pools(self) -> list[PoolRow]:
        return [
            _pool(r) for r in await self._conn.fetch("SELECT * FROM matcher.pools ORDER BY name")
        ]

    async def pool(self, name: str) -> PoolRow | None:
        row = await self._conn.fetchrow("SELECT * FROM matcher.pools WHERE name = $1", name)
        return _pool(row) if row else None

    async def create_round(
        self,
        round_id: UUID,
        pool: PoolRow,
        group_size: int,
        seed: int,
        serendipity: float,
        dry_run: bool,
    ) -> RoundRow:
        row = await self._conn.fetchrow(
            """
            INSERT INTO matcher.rounds (id, pool, group_size, seed, serendipity, dry_run)
            VALUES ($1, $2, $3, $4, $5, $6)
            RETURNING *
            """,
            round_id,
            pool.name,
            group_size,
            seed,
            serendipity,
            dry_run,
        )
        await self._conn.execute("NOTIFY roac_matcher_rounds")
        return _round(row)

    async def due_pools(self, now: datetime, limit: int = 64) -> list[PoolRow]:
        """Pools whose next round is due at `now`, locked; SKIP LOCKED lets several matchers
        poll at once without requesting a round twice (one skips what another holds)."""
        rows = await self._conn.fetch(
            """
            SELECT * FROM matcher.pools WHERE next_round_at <= $1
            ORDER BY name LIMIT $2 FOR UPDATE SKIP LOCKED
            """,
            now,
            limit,
        )
        return [_pool(r) for r in rows]

    async def request_scheduled(self, due: Sequence[ScheduledRound]) -> int:
        """Request the due pools' rounds and move each pool's schedule to its next slot."""
        if not due:
            return 0
        await self._conn.execute(
            """
            UPDATE matcher.pools p SET next_round_at = d.next_round_at
            FROM unnest($1::text[], $2::timestamptz[]) AS d(name, next_round_at)
            WHERE p.name = d.name
            """,
            [d.pool.name for d in due],
            [d.next_round_at for d in due],
        )
        await self._conn.executemany(
            """
            INSERT INTO matcher.rounds (id, pool, group_size, seed, serendipity)
            VALUES (gen_random_uuid(), $1, $2, $3, $4)
            """,
            [(d.pool.name, d.pool.group_size, d.seed, d.pool.serendipity) for d in due],
        )
        return len(due)

    async def claim_round(self, worker: UUID, lease_seconds: float) -> RoundRow | None:
        """Take the oldest round waiting, or one whose worker's lease ran out (it crashed)."""
        row = await self._conn.fetchrow(
            """
            UPDATE matcher.rounds SET status = 'running', worker = $1,
                lease_until = now() + make_interval(secs => $2::float8),
                started_at = coalesce(started_at, now()), attempts = attempts + 1
            WHERE id = (
                SELECT id FROM matcher.rounds
                WHERE status = 'pending' OR (status = 'running' AND lease_until < now())
                ORDER BY requested_at LIMIT 1 FOR UPDATE SKIP LOCKED
            )
            RETURNING *
            """,
            worker,
            lease_seconds,
        )
        return _round(row) if row else None

    async def hold_round(self, round_id: UUID, worker: UUID) -> bool:
        """Lock the round for its final write; False when another worker has taken it over."""
        owner = await self._conn.fetchval(
            "SELECT worker FROM matcher.rounds WHERE id = $1 AND status = 'running' FOR UPDATE",
            round_id,
        )
        return bool(owner == worker)

    async def finish_round(
        self,
        round_id: UUID,
        status: str,
        stats: dict[str, Any] | None,
        plan: list[dict[str, Any]] | None,
        error: str | None = None,
    ) -> None:
        await self._conn.execute(
            """
            UPDATE matcher.rounds SET status = $2, stats = $3::jsonb, plan = $4::jsonb,
                error = $5, finished_at = now(), lease_until = NULL
            WHERE id = $1
            """,
            round_id,
            status,
            stats,
            plan,
            error,
        )

    async def round(self, round_id: UUID) -> RoundRow | None:
        row = await self._conn.fetchrow("SELECT * FROM matcher.rounds WHERE id = $1", round_id)
        return _round(row) if row else None

    async def round_proposals(
        self, round_id: UUID, limit: int, after: UUID | None
    ) -> list[dict[str, Any]]:
        rows = await self._conn.fetch(
            """
            SELECT p.id, p.score, p.reason, p.topics, p.created_at,
                   (SELECT jsonb_agg(jsonb_build_object('source', i.source,
                                                        'external_id', i.external_id)
                                     ORDER BY pp.contact_id)
                    FROM matcher.proposal_participants pp
                    CROSS JOIN LATERAL (
                        SELECT source, external_id FROM matcher.identities
                        WHERE contact_id = pp.contact_id
                        ORDER BY created_at, source, external_id LIMIT 1) AS i
                    WHERE pp.proposal_id = p.id) AS participants
            FROM matcher.proposals p
            WHERE p.round_id = $1 AND ($3::uuid IS NULL OR p.id > $3)
            ORDER BY p.id LIMIT $2
            """,
            round_id,
            limit,
            after,
        )
        return [
            {
                "id": r["id"],
                "participants": r["participants"],
                "score": r["score"],
                "reason": r["reason"],
                "topics": r["topics"],
                "created_at": r["created_at"],
            }
            for r in rows
        ]

    async def round_feedback(self, round_id: UUID) -> dict[str, Any]:
        rows = await self._conn.fetch(
            """
            SELECT f.outcome, count(*) AS n, avg(f.rating) AS rating
            FROM matcher.feedback f JOIN matcher.proposals p ON p.id = f.proposal_id
            WHERE p.round_id = $1 GROUP BY f.outcome
            """,
            round_id,
        )
        return {r["outcome"]: r["n"] for r in rows}
