"""Idempotent consumption: remember which events a consumer has already applied.

`claim_new` runs inside the consumer's transaction. A concurrent transaction claiming the same
message waits on the primary key until the first commits (then gets nothing back) or rolls back
(then claims it itself), so exactly one transaction applies each event.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

import asyncpg


async def claim_new(
    conn: asyncpg.Connection, consumer: str, message_ids: Iterable[UUID]
) -> set[UUID]:
    """Record the ids; return those seen for the first time."""
    # A fixed order keeps concurrent claims free of deadlocks (by the integer: UUID's own
    # comparison is a Python method, a tenth of a batch's time for 2,000 ids).
    ids = sorted(set(message_ids), key=lambda u: u.int)
    rows = await conn.fetch(
        """
        INSERT INTO messaging.inbox (consumer, message_id)
        SELECT $1, id FROM unnest($2::uuid[]) AS t(id)
        ON CONFLICT DO NOTHING
        RETURNING message_id
        """,
        consumer,
        ids,
    )
    return {row["message_id"] for row in rows}
