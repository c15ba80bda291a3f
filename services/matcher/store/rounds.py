"""Pools and rounds: the statements of `POST /v1/pools`, `/v1/rounds` and the round worker.
Runs on the connection (and transaction) of a matcher unit of work (`uow.rounds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from services.matcher.store.rows import PoolRow, RoundRow


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
    )


class RoundRecords:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def upsert_pool(self, pool: PoolRow) -> tuple[PoolRow, bool]:
        """Create or replace a pool; True when it was created."""
        row = await self._conn.fetchrow(
            """
            INSERT INTO matcher.pools AS p
                (name, selector, group_size, serendipity, rules, every_seconds, next_round_at)
            VALUES ($1, $2::jsonb, $3, $4, $5::jsonb, $6,
                    CASE WHEN $6::int IS NULL THEN NULL
                         ELSE now() + make_interval(secs => $6::int) END)
            ON CONFLICT (name) DO UPDATE SET
                selector = EXCLUDED.selector, group_size = EXCLUDED.group_size,
                serendipity = EXCLUDED.serendipity, rules = EXCLUDED.rules,
                every_seconds = EXCLUDED.every_seconds,
                next_round_at = CASE WHEN EXCLUDED.every_seconds IS NULL THEN NULL
                                     ELSE coalesce(p.next_round_at, EXCLUDED.next_round_at) END,
                updated_at = now()
            RETURNING *, (xmax = 0) AS created
            """,
            pool.name,
            pool.selector,
            pool.group_size,
            pool.serendipity,
            pool.rules,
            pool.every_seconds,
        )
        return _pool(row), bool(row["created"])

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

    async def schedule_due_rounds(self, seeds: Sequence[int]) -> int:
        """Request a round for each pool whose schedule is due, and move its schedule on;
        SKIP LOCKED lets several matchers run this loop without requesting a round twice."""
        created = await self._conn.fetchval(
            """
            WITH locked AS (
                SELECT name, group_size, serendipity FROM matcher.pools
                WHERE next_round_at <= now()
                ORDER BY name LIMIT 64 FOR UPDATE SKIP LOCKED
            ), due AS (
                SELECT *, row_number() OVER (ORDER BY name) AS n FROM locked
            ), moved AS (
                -- The next one a period later; a schedule missed for long resumes from now.
                UPDATE matcher.pools p
                SET next_round_at = greatest(p.next_round_at, now() - make_interval(
                        secs => p.every_seconds)) + make_interval(secs => p.every_seconds)
                FROM due WHERE p.name = due.name
            ), requested AS (
                INSERT INTO matcher.rounds (id, pool, group_size, seed, serendipity)
                SELECT gen_random_uuid(), due.name, due.group_size, ($1::bigint[])[due.n],
                       due.serendipity
                FROM due
                RETURNING id
            )
            SELECT count(*) FROM requested
            """,
            list(seeds),
        )
        return int(created)

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
