"""Resources and who received them, with the resource cap re-checked under row locks. Runs on
the connection (and transaction) of a matcher unit of work (`uow.resources`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from services.matcher.store.contacts import LOCK_CONTACTS, NOT_SNOOZED, WEEK_AGO, reachable
from services.matcher.store.rows import HeldTopic


def may_take_another_resource(cap_param: str) -> str:
    """SQL: the contact row `c` may take one more resource, the cap being the query parameter
    `cap_param`: `availability.may_take_another`, counted on resources received within the
    rolling week. Applied in SQL because the recipients are chosen, and re-checked under their
    row locks, by the statements themselves."""
    return f"""{reachable("c")} AND {NOT_SNOOZED}
              AND (SELECT count(*) FROM matcher.resource_recipients r
                   WHERE r.contact_id = c.id AND r.created_at > {WEEK_AGO}) < {cap_param}"""  # noqa: S608 (constant fragments, no input)


class ResourceRecords:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def upsert_resource(self, rid: UUID, url: str, title: str, topics: list[str]) -> None:
        await self._conn.execute(
            """
            INSERT INTO matcher.resources (id, url, title, topics) VALUES ($1, $2, $3, $4)
            ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, topics = EXCLUDED.topics,
                updated_at = now()
            """,
            rid,
            url,
            title,
            topics,
        )

    async def interested_in(
        self, resource_id: UUID, topic_ids: list[int], cap_per_week: int
    ) -> list[HeldTopic]:
        """Who likes or seeks these topics, is reachable and available, has room under the
        resource cap, and has not received this resource yet."""
        rows = await self._conn.fetch(
            f"""
            SELECT i.contact_id, i.topic_id, i.weight, i.declared_at
            FROM matcher.interests i JOIN matcher.contacts c ON c.id = i.contact_id
            WHERE i.topic_id = ANY($1::bigint[]) AND i.kind IN ('likes', 'seeks')
              AND NOT EXISTS (SELECT 1 FROM matcher.resource_recipients r
                              WHERE r.resource_id = $2 AND r.contact_id = i.contact_id)
              AND {may_take_another_resource("$3")}
            """,  # noqa: S608 (constant fragments, no input)
            topic_ids,
            resource_id,
            cap_per_week,
        )
        return [
            HeldTopic(r["contact_id"], r["topic_id"], float(r["weight"]), r["declared_at"])
            for r in rows
        ]

    async def lock_resource_room(self, contact_ids: list[int], cap_per_week: int) -> set[int]:
        """Lock the recipients (id order) and return those still reachable, available and under
        the resource cap, read after the locks were granted."""
        ids = sorted(set(contact_ids))
        await self._conn.execute(LOCK_CONTACTS, ids)
        rows = await self._conn.fetch(
            f"""
            SELECT c.id FROM matcher.contacts c
            WHERE c.id = ANY($1::bigint[]) AND {may_take_another_resource("$2")}
            """,  # noqa: S608 (constant fragments, no input)
            ids,
            cap_per_week,
        )
        return {r["id"] for r in rows}

    async def insert_resource_recipients(
        self, resource_id: UUID, rows: Sequence[tuple[int, UUID, float]]
    ) -> set[UUID]:
        ordered = sorted(rows)
        inserted = await self._conn.fetch(
            """
            INSERT INTO matcher.resource_recipients (resource_id, contact_id, proposal_id, score)
            SELECT $1, c, p, s FROM unnest($2::bigint[], $3::uuid[], $4::real[]) AS t(c, p, s)
            ON CONFLICT (resource_id, contact_id) DO NOTHING
            RETURNING proposal_id
            """,
            resource_id,
            [r[0] for r in ordered],
            [r[1] for r in ordered],
            [r[2] for r in ordered],
        )
        return {r["proposal_id"] for r in inserted}

    async def resource_recipient_count(self, resource_id: UUID) -> int:
        count: int = await self._conn.fetchval(
            "SELECT count(*) FROM matcher.resource_recipients WHERE resource_id = $1", resource_id
        )
        return count

    async def resource(self, resource_id: UUID) -> dict[str, Any] | None:
        row = await self._conn.fetchrow(
            """
            SELECT r.id, r.url, r.title, r.topics, r.created_at,
                   (SELECT count(*) FROM matcher.resource_recipients rr
                    WHERE rr.resource_id = r.id) AS recipients
            FROM matcher.resources r WHERE r.id = $1
            """,
            resource_id,
        )
        return dict(row) if row else None
