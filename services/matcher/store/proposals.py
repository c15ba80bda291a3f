"""Proposals: the groups ever proposed (the guard against proposing one twice), the proposals
and their participants, delivery outcomes and feedback. Runs on the connection (and
transaction) of a matcher unit of work (`uow.proposals`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from uuid import UUID

import asyncpg

from services.matcher.store.rows import ProposalRow
from shared.events import ContactRef


class ProposalRecords:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def partners_met(
        self, contact_ids: Iterable[int], cooldown_days: int | None = None
    ) -> dict[int, set[int]]:
        """Everyone each person must not be grouped with again: proposed to them within the
        cooldown (ever, without one), or in a group that was declined."""
        rows = await self._conn.fetch(
            """
            SELECT p.person, theirs.contact_id AS partner
            FROM unnest($1::bigint[]) AS p(person)
            CROSS JOIN LATERAL (
                SELECT proposal_id, created_at FROM matcher.proposal_participants
                WHERE contact_id = p.person OFFSET 0  -- an index lookup per person, never a hash
            ) AS mine
            CROSS JOIN LATERAL (
                SELECT contact_id FROM matcher.proposal_participants
                WHERE proposal_id = mine.proposal_id AND contact_id <> p.person LIMIT 6
            ) AS theirs
            WHERE $2::int IS NULL
               OR mine.created_at > now() - make_interval(days => $2::int)
               OR EXISTS (
                   SELECT 1 FROM matcher.proposals pr JOIN matcher.groups g USING (group_key)
                   WHERE pr.id = mine.proposal_id AND g.declined)
            """,
            list(set(contact_ids)),
            cooldown_days,
        )
        found: dict[int, set[int]] = {}
        for r in rows:
            found.setdefault(r["person"], set()).add(r["partner"])
        return found

    async def insert_proposals(
        self, proposals: Sequence[ProposalRow], cooldown_days: int | None = None
    ) -> set[UUID]:
        """Insert proposals whose group may be proposed (never before, or not within the
        cooldown, and never after a decline); return the ids actually inserted. The groups row
        is the guard: of two transactions proposing one group, the second waits and skips."""
        ordered = sorted(proposals, key=lambda p: p.group_key)
        allowed = await self._conn.fetch(
            """
            INSERT INTO matcher.groups AS g (group_key, last_proposed_at)
            SELECT k, now() FROM unnest($1::text[]) AS t(k) ORDER BY k
            ON CONFLICT (group_key) DO UPDATE SET last_proposed_at = EXCLUDED.last_proposed_at
                WHERE NOT g.declined AND $2::int IS NOT NULL
                  AND g.last_proposed_at < now() - make_interval(days => $2::int)
            RETURNING group_key
            """,
            [p.group_key for p in ordered],
            cooldown_days,
        )
        keys = {r["group_key"] for r in allowed}
        ordered = [p for p in ordered if p.group_key in keys]
        if not ordered:
            return set()
        await self._conn.execute(
            """
            INSERT INTO matcher.proposals
                (id, group_key, score, reason, topics, correlation_id, round_id)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::real[], $4::text[],
                                 $5::text[]::jsonb[], $6::text[], $7::uuid[])
            """,
            [p.id for p in ordered],
            [p.group_key for p in ordered],
            [p.score for p in ordered],
            [p.reason for p in ordered],
            [json.dumps(p.topics) for p in ordered],
            [p.correlation_id for p in ordered],
            [p.round_id for p in ordered],
        )
        members = sorted((c, p.id) for p in ordered for c in p.contact_ids)
        await self._conn.execute(
            """
            INSERT INTO matcher.proposal_participants (proposal_id, contact_id)
            SELECT * FROM unnest($1::uuid[], $2::bigint[])
            """,
            [m[1] for m in members],
            [m[0] for m in members],
        )
        return {p.id for p in ordered}

    async def record_deliveries(self, outcomes: Sequence[tuple[UUID, ContactRef, str]]) -> None:
        """Mark participants delivered or failed, from the notifier's delivery events."""
        await self._conn.execute(
            """
            UPDATE matcher.proposal_participants AS pp SET delivery_status = u.status
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
                 AS u(proposal_id, source, external_id, status)
            JOIN matcher.identities i ON i.source = u.source AND i.external_id = u.external_id
            WHERE pp.proposal_id = u.proposal_id AND pp.contact_id = i.contact_id
              AND pp.delivery_status <> 'delivered'
            """,
            [o[0] for o in outcomes],
            [o[1].source for o in outcomes],
            [o[1].external_id for o in outcomes],
            [o[2] for o in outcomes],
        )

    async def record_feedback(
        self, proposal_id: UUID, outcome: str, rating: int | None, respondent: int | None = None
    ) -> bool | None:
        """Store one piece of feedback; None when the proposal is unknown, else whether it is
        the proposal's first `met` (its topics count one more meeting only then). The proposal
        row is locked so two participants reporting at once count one meeting. A `respondent`
        (a check-in's: their position in the proposal) has one row, replaced by their later
        feedback (a rating kept unless a new one is given)."""
        exists = await self._conn.fetchval(
            "SELECT true FROM matcher.proposals WHERE id = $1 FOR NO KEY UPDATE", proposal_id
        )
        if not exists:
            return None
        met_before = await self._conn.fetchval(
            "SELECT count(*) FROM matcher.feedback WHERE proposal_id = $1 AND outcome = 'met'",
            proposal_id,
        )
        await self._conn.execute(
            """
            INSERT INTO matcher.feedback (proposal_id, outcome, rating, respondent)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (proposal_id, respondent) WHERE respondent IS NOT NULL
            DO UPDATE SET outcome = EXCLUDED.outcome,
                          rating = coalesce(EXCLUDED.rating, matcher.feedback.rating)
            """,
            proposal_id,
            outcome,
            rating,
            respondent,
        )
        return outcome == "met" and met_before == 0

    async def decline_group(self, proposal_id: UUID) -> None:
        await self._conn.execute(
            """
            UPDATE matcher.groups g SET declined = true FROM matcher.proposals p
            WHERE p.id = $1 AND g.group_key = p.group_key
            """,
            proposal_id,
        )

    async def count_meeting(self, proposal_id: UUID) -> None:
        await self._conn.execute(
            """
            UPDATE matcher.topics t SET meetings = t.meetings + 1
            FROM matcher.proposals p, jsonb_array_elements(p.topics) AS pt
            WHERE p.id = $1 AND t.name = pt->>'topic'
            """,
            proposal_id,
        )

    async def feedback_summary(self, proposal_id: UUID) -> tuple[dict[str, int], float | None]:
        rows = await self._conn.fetch(
            "SELECT outcome, count(*) AS n, avg(rating) AS rating FROM matcher.feedback "
            "WHERE proposal_id = $1 GROUP BY outcome",
            proposal_id,
        )
        ratings = await self._conn.fetchval(
            "SELECT avg(rating) FROM matcher.feedback WHERE proposal_id = $1", proposal_id
        )
        return {r["outcome"]: r["n"] for r in rows}, (
            round(float(ratings), 2) if ratings is not None else None
        )
