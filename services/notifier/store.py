"""Every SQL statement the notifier runs, behind a unit of work (one transaction)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from shared import outbox
from shared.events import Event

PRODUCER = "notifier"


@dataclass(frozen=True, slots=True)
class DeliveryState:
    status: str
    attempts: int


class NotifierUnitOfWork:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def lock_delivery(
        self, delivery_id: UUID, proposal_id: UUID, source: str, external_id: str, channel: str
    ) -> DeliveryState:
        """Create the delivery row if new and lock it until commit: a second copy of the same
        proposal, handled concurrently, waits here and then sees the outcome of the first."""
        await self._conn.execute(
            """
            INSERT INTO notifier.deliveries
                (id, proposal_id, recipient_source, recipient_external_id, channel, status)
            VALUES ($1, $2, $3, $4, $5, 'pending')
            ON CONFLICT DO NOTHING
            """,
            delivery_id,
            proposal_id,
            source,
            external_id,
            channel,
        )
        row = await self._conn.fetchrow(
            "SELECT status, attempts FROM notifier.deliveries WHERE id = $1 FOR UPDATE", delivery_id
        )
        return DeliveryState(row["status"], row["attempts"])

    async def mark_sent(self, delivery_id: UUID, attempts: int, provider_message_id: str) -> None:
        await self._conn.execute(
            """
            UPDATE notifier.deliveries
            SET status = 'sent', attempts = $2, provider_message_id = $3, last_error = NULL,
                sent_at = now(), updated_at = now()
            WHERE id = $1
            """,
            delivery_id,
            attempts,
            provider_message_id,
        )

    async def mark_failed(self, delivery_id: UUID, attempts: int, error: str) -> None:
        await self._conn.execute(
            """
            UPDATE notifier.deliveries
            SET status = 'failed', attempts = $2, last_error = $3, updated_at = now()
            WHERE id = $1
            """,
            delivery_id,
            attempts,
            error,
        )

    async def enqueue(self, events: Sequence[Event]) -> None:
        await outbox.enqueue(self._conn, PRODUCER, events)


class NotifierStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[NotifierUnitOfWork]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield NotifierUnitOfWork(conn)
