"""The notifier's rows in the shared transactional outbox (shared/outbox.py): events and jobs
written in the caller's transaction, relayed to RabbitMQ after it commits."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared import outbox
from shared.events import Event

# The outbox's producer name for the notifier's rows (its relay publishes only these).
PRODUCER = "notifier"


class Outbox:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def enqueue(
        self,
        events: Sequence[Event],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Onto the events exchange by default; `exchange=""` with `routing_key` a queue's name
        sends to that queue (a delay queue, the parking queue)."""
        if exchange is None:
            await outbox.enqueue(self._conn, PRODUCER, events)
        else:
            await outbox.enqueue(
                self._conn,
                PRODUCER,
                events,
                exchange=exchange,
                routing_key=routing_key,
                headers=headers,
            )
