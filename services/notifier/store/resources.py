"""Resource proposals (resource.proposed.v1): one row per proposal, at most one per resource and
person; where each recipient's delivery stands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from services.notifier.store.rows import NewResource


class ResourceStore:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(self, resources: Sequence[NewResource]) -> set[UUID]:
        """Record new resource proposals; return the ids recorded now (not before, and not a
        resource already proposed to the same person under another id)."""
        rows = await self._conn.fetch(
            """
            INSERT INTO notifier.resources
                (id, resource_id, recipient_source, recipient_external_id, proposal,
                 correlation_id, proposed_at)
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[],
                                 $6::text[], $7::timestamptz[])
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
            [n.resource.proposal_id for n in resources],
            [n.resource.resource_id for n in resources],
            [n.resource.recipient.source for n in resources],
            [n.resource.recipient.external_id for n in resources],
            [n.resource.model_dump(mode="json") for n in resources],
            [n.correlation_id for n in resources],
            [n.proposed_at for n in resources],
        )
        return {r["id"] for r in rows}

    async def deliveries(self, resource_id: UUID, limit: int) -> list[dict[str, Any]]:
        """Per recipient of a resource: its delivery's status (no names or addresses)."""
        rows = await self._conn.fetch(
            """
            SELECT r.id, r.recipient_source, r.recipient_external_id, r.created_at,
                   d.channel, d.status, d.attempts, d.sent_at, d.updated_at
            FROM notifier.resources r
            LEFT JOIN notifier.deliveries d ON d.proposal_id = r.id AND d.kind = 'resource'
            WHERE r.resource_id = $1
            ORDER BY r.recipient_source, r.recipient_external_id
            LIMIT $2
            """,
            resource_id,
            limit,
        )
        return [
            {
                "proposal_id": r["id"],
                "recipient": {
                    "source": r["recipient_source"],
                    "external_id": r["recipient_external_id"],
                },
                "channel": r["channel"],
                "status": r["status"],
                "attempts": r["attempts"] or 0,
                "proposed_at": r["created_at"],
                "sent_at": r["sent_at"],
                "updated_at": r["updated_at"],
            }
            for r in rows
        ]
