"""Read-only lists for operators (the console, services/console/): rounds of a pool, people
found by name, email, source id, tag or topic, one person's profile and interests, and how many
people a pool's selector takes in.

Kept apart from services/matcher/store/, whose statements are the matching's own: these only
read, page by keyset (never OFFSET) and are bounded by `limit`, so a page costs the same on page
one and page one thousand."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.matcher.store.contacts import channels_in_their_order, in_pool, reachable

# Longest search text: a topic or a name, not a document.
MAX_QUERY = 200


class Directory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def rounds(
        self, pool: str | None, limit: int, before: datetime | None
    ) -> list[dict[str, Any]]:
        """Rounds newest first (requested_at), optionally of one pool; `before` pages on."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT id, pool, status, dry_run, group_size, seed, serendipity, requested_at,
                       started_at, finished_at, error,
                       stats->'proposed' AS proposed, stats->'placed' AS placed,
                       stats->'unplaced' AS unplaced, stats->'coverage' AS coverage,
                       coalesce(jsonb_array_length(plan), 0) AS planned
                FROM matcher.rounds
                WHERE ($1::text IS NULL OR pool = $1)
                  AND ($3::timestamptz IS NULL OR requested_at < $3)
                ORDER BY requested_at DESC, id
                LIMIT $2
                """,
                pool,
                limit,
                before,
            )
        return [
            {
                "id": r["id"],
                "pool": r["pool"],
                "status": r["status"],
                "dry_run": r["dry_run"],
                "group_size": r["group_size"],
                "seed": r["seed"],
                "serendipity": r["serendipity"],
                "requested_at": r["requested_at"],
                "started_at": r["started_at"],
                "finished_at": r["finished_at"],
                "error": r["error"],
                "groups": (r["planned"] if r["dry_run"] else _number(r["proposed"])),
                "placed": _number(r["placed"]),
                "unplaced": _number(r["unplaced"]),
                "coverage": _number(r["coverage"]),
            }
            for r in rows
        ]

    async def round_with_plan_page(
        self, round_id: UUID, offset: int, limit: int
    ) -> dict[str, Any] | None:
        """A round as GET /v1/rounds/{id} shows it, with only `limit` of its planned groups
        from `offset` (sliced by PostgreSQL: a dry run of 100,000 people plans 50,000 groups)
        and how many there are in all."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                """
                SELECT r.id, r.pool, r.status, r.group_size, r.seed, r.serendipity, r.dry_run,
                       r.attempts, r.requested_at, r.started_at, r.finished_at, r.stats, r.error,
                       CASE WHEN r.plan IS NULL THEN NULL ELSE (
                           SELECT coalesce(jsonb_agg(g.e ORDER BY g.i), '[]'::jsonb)
                           FROM (SELECT e, i FROM jsonb_array_elements(r.plan)
                                 WITH ORDINALITY AS t(e, i)
                                 ORDER BY i OFFSET $2 LIMIT $3) AS g) END AS plan,
                       coalesce(jsonb_array_length(r.plan), 0) AS plan_size
                FROM matcher.rounds r WHERE r.id = $1
                """,
                round_id,
                offset,
                limit,
            )
        return dict(row) if row is not None else None

    async def pool_size(self, selector: Mapping[str, Sequence[str]]) -> int:
        """How many reachable, not opted-out people the selector takes in: those of a round's
        members (`ContactRecords.pool_members`, the same `in_pool`) a round may place."""
        selected, arguments = in_pool(selector)
        async with self._pool.acquire() as conn:
            count = await conn.fetchval(
                f"SELECT count(*) FROM matcher.contacts c WHERE {selected} AND {reachable('c')}",  # noqa: S608 (constant fragments, no input)
                *arguments,
            )
        return int(count)

    async def search(
        self, query: str, limit: int, after: int | None, sources: frozenset[str] | None
    ) -> list[dict[str, Any]]:
        """People whose name, email, source id, tag or topic matches `query` (a substring of the
        name, case-insensitive; the whole of anything else: an email as it was sent, a tag or
        topic in any case), by contact id from `after`; only people with an identity in
        `sources` (None: any)."""
        text = query.strip()[:MAX_QUERY]
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                WITH found AS (
                    -- Each way of matching on its own index (a name is a substring: a scan of
                    -- names only), joined once: no per-row subquery over every contact.
                    SELECT id FROM matcher.contacts WHERE $1 = '' OR name ILIKE $2
                    UNION SELECT contact_id FROM matcher.identities WHERE external_id = $1
                    UNION SELECT id FROM matcher.contacts WHERE tags @> ARRAY[lower($1)]
                    UNION SELECT id FROM matcher.contacts
                          WHERE channels @> jsonb_build_array(jsonb_build_object('address', $1))
                    UNION SELECT n.contact_id FROM matcher.interests n
                          JOIN matcher.topics t ON t.id = n.topic_id WHERE t.name = lower($1)
                )
                SELECT c.id, c.name, c.organization, c.tags, c.snoozed_until, c.opted_out,
                       first.source, first.external_id
                FROM found JOIN matcher.contacts c ON c.id = found.id
                JOIN LATERAL (
                    SELECT source, external_id FROM matcher.identities
                    WHERE contact_id = c.id ORDER BY created_at, source, external_id LIMIT 1
                ) AS first ON true
                WHERE c.merged_into IS NULL AND c.erased_at IS NULL
                  AND ($3::bigint IS NULL OR c.id > $3)
                  AND ($4::text[] IS NULL OR EXISTS (
                        SELECT 1 FROM matcher.identities s
                        WHERE s.contact_id = c.id AND s.source = ANY($4::text[])))
                ORDER BY c.id
                LIMIT $5
                """,
                text,
                pattern,
                after,
                sorted(sources) if sources is not None else None,
                limit,
            )
        return [
            {
                "cursor": r["id"],
                "source": r["source"],
                "external_id": r["external_id"],
                "name": r["name"],
                "organization": r["organization"],
                "tags": list(r["tags"]),
                "snoozed_until": r["snoozed_until"],
                "opted_out": r["opted_out"],
            }
            for r in rows
        ]

    async def profile(
        self,
        source: str,
        external_id: str,
        interest_limit: int = 500,
        block_limit: int = 200,
    ) -> dict[str, Any] | None:
        """The person of this identity: the contact's details, the identity's own last contact
        event (what an integration sent), their own preferences, interests and block list (at
        most `interest_limit` and `block_limit`; `truncated` says when there were more)."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                """
                SELECT c.id, c.name, c.organization, c.timezone, c.language, c.channels, c.tags,
                       c.snoozed_until, c.opted_out, c.deliverable, i.profile, c.paused_until,
                       c.own_cap_per_week, c.own_cap_per_month, c.own_language,
                       c.channel_order, c.opted_in_at, c.preferences_at
                FROM matcher.identities i JOIN matcher.contacts c ON c.id = i.contact_id
                WHERE i.source = $1 AND i.external_id = $2 AND c.erased_at IS NULL
                """,
                source,
                external_id,
            )
            if row is None:
                return None
            interests = await conn.fetch(
                """
                SELECT t.name, n.kind, n.weight, n.declared_at
                FROM matcher.interests n JOIN matcher.topics t ON t.id = n.topic_id
                WHERE n.contact_id = $1 ORDER BY t.name, n.kind LIMIT $2
                """,
                row["id"],
                interest_limit + 1,
            )
            blocks = await conn.fetch(
                """
                SELECT first.source, first.external_id
                FROM matcher.blocks b
                JOIN LATERAL (
                    SELECT source, external_id FROM matcher.identities
                    WHERE contact_id = b.blocked_id ORDER BY created_at, source, external_id
                    LIMIT 1
                ) AS first ON true
                WHERE b.contact_id = $1 ORDER BY 1, 2 LIMIT $2
                """,
                row["id"],
                block_limit + 1,
            )
        profile = row["profile"]
        if isinstance(profile, str):
            profile = json.loads(profile)
        return {
            "source": source,
            "external_id": external_id,
            "name": row["name"],
            "organization": row["organization"],
            "timezone": row["timezone"],
            "language": row["language"],
            # In the person's own order when they chose one (their preferences page).
            "channels": channels_in_their_order(row["channels"] or [], row["channel_order"]),
            "tags": list(row["tags"]),
            "snoozed_until": row["snoozed_until"],
            "opted_out": row["opted_out"],
            "reachable": row["deliverable"],
            "contact_event": profile,
            "interests": [
                {
                    "topic": r["name"],
                    "kind": r["kind"],
                    "weight": round(float(r["weight"]), 3),
                    "declared_at": r["declared_at"],
                }
                for r in interests[:interest_limit]
            ],
            "blocks": [
                {"source": r["source"], "external_id": r["external_id"]}
                for r in blocks[:block_limit]
            ],
            # What the person chose themselves (their preferences page, or set on their behalf).
            "preferences": {
                "paused_until": row["paused_until"],
                "cap_per_week": row["own_cap_per_week"],
                "cap_per_month": row["own_cap_per_month"],
                "language": row["own_language"],
                "channel_order": list(row["channel_order"] or []),
                "opted_in_at": row["opted_in_at"],
                "changed_at": row["preferences_at"],
            },
            # More than the answer holds (it says so rather than cutting silently).
            "truncated": {
                "interests": len(interests) > interest_limit,
                "blocks": len(blocks) > block_limit,
            },
        }


def _number(value: Any) -> float | int | None:
    """A number kept in a round's JSON statistics (asyncpg hands jsonb over as text)."""
    if value is None:
        return None
    parsed = json.loads(value) if isinstance(value, str) else value
    return parsed if isinstance(parsed, int | float) else None
