"""Transactional outbox: events leave a service only after the transaction that made them commits.

`enqueue` writes outbox rows inside the caller's transaction and signals the relay with
`pg_notify` (delivered at commit). `OutboxRelay` claims rows with `FOR UPDATE SKIP LOCKED`
(several instances share the work without taking the same row), publishes each with confirms,
and deletes what RabbitMQ confirmed. A crash between the confirm and the delete publishes a row
again; consumers deduplicate by message id, so that is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

import asyncpg

from shared.broker import EventPublisher
from shared.events import Event, batch_body, encode_event
from shared.metrics import OUTBOX_DELAY_SECONDS, OUTBOX_PUBLISHED, OUTBOX_RELAY_FAILURES
from shared.topology import EVENTS_EXCHANGE

NOTIFY_CHANNEL = "roac_outbox"
log = logging.getLogger("roac.outbox")


async def enqueue(
    conn: asyncpg.Connection,
    producer: str,
    events: Sequence[Event],
    *,
    exchange: str = EVENTS_EXCHANGE.name,
    routing_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Add events to the outbox within the caller's transaction (one AMQP message each), routed
    by their type on roac.events unless an exchange and routing key are given."""
    if not events:
        return
    # One statement: the rows and the wake-up call for the relay (delivered at commit).
    await conn.execute(
        """
        WITH added AS (
            INSERT INTO messaging.outbox
                (producer, message_id, routing_key, correlation_id, body, exchange, headers)
            SELECT $1, m, r, c, b, $6, $7::jsonb
            FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bytea[]) AS t(m, r, c, b)
            RETURNING 1
        )
        SELECT pg_notify($8, $1) FROM (SELECT 1 FROM added LIMIT 1) AS any_row
        """,
        producer,
        [e.message_id for e in events],
        [routing_key or e.type for e in events],
        [e.correlation_id for e in events],
        [encode_event(e) for e in events],
        exchange,
        headers or None,
        NOTIFY_CHANNEL,
    )


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event already serialised (by a producer writing tens of thousands at once)."""

    message_id: UUID
    routing_key: str
    correlation_id: str
    body: bytes


async def enqueue_encoded(
    conn: asyncpg.Connection, producer: str, events: Sequence[EncodedEvent]
) -> None:
    """`enqueue` for events serialised by the caller, routed on roac.events by `routing_key`."""
    if not events:
        return
    await conn.execute(
        """
        WITH added AS (
            INSERT INTO messaging.outbox
                (producer, message_id, routing_key, correlation_id, body, exchange, headers)
            SELECT $1, m, r, c, b, $6, NULL
            FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bytea[]) AS t(m, r, c, b)
            RETURNING 1
        )
        SELECT pg_notify($7, $1) FROM (SELECT 1 FROM added LIMIT 1) AS any_row
        """,
        producer,
        [e.message_id for e in events],
        [e.routing_key for e in events],
        [e.correlation_id for e in events],
        [e.body for e in events],
        EVENTS_EXCHANGE.name,
        NOTIFY_CHANNEL,
    )


class OutboxRelay:
    """Publishes one producer's outbox rows until cancelled."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: EventPublisher,
        producer: str,
        *,
        database_url: str,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        events_per_message: int = 100,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._producer = producer
        self._database_url = database_url
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._events_per_message = events_per_message
        self._wakeup = asyncio.Event()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == self._producer:
            self._wakeup.set()

    async def run(self) -> None:
        listener: asyncpg.Connection | None = None
        backoff = 0.5
        try:
            while True:
                try:
                    if listener is None or listener.is_closed():
                        listener = await asyncpg.connect(self._database_url)
                        await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
                    self._wakeup.clear()
                    published = await self.drain_once()
                    backoff = 0.5
                    if published >= self._batch_size:
                        continue  # more may be waiting
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), self._poll_interval)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the relay must outlive broker and database outages
                    OUTBOX_RELAY_FAILURES.labels(self._producer).inc()
                    log.warning("outbox relay pass failed, retrying in %.1fs: %r", backoff, exc)
                    if listener is not None:
                        with contextlib.suppress(Exception):
                            await listener.close(timeout=1)
                        listener = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close(timeout=1)

    async def drain_once(self) -> int:
        """Publish one batch of pending rows; return how many were published."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT id, message_id, routing_key, correlation_id, body, created_at, exchange,
                       headers
                FROM messaging.outbox
                WHERE producer = $1
                ORDER BY id
                LIMIT $2
                FOR UPDATE SKIP LOCKED
                """,
                self._producer,
                self._batch_size,
            )
            if not rows:
                return 0
            groups = _group(rows, self._events_per_message)
            results = await asyncio.gather(
                *(
                    self._publisher.publish_encoded(
                        message_id=str(group[0]["message_id"] if len(group) == 1 else uuid4()),
                        routing_key=group[0]["routing_key"],
                        body=batch_body([row["body"] for row in group]),
                        correlation_id=group[0]["correlation_id"],
                        exchange=group[0]["exchange"],
                        headers=group[0]["headers"],
                        event_count=len(group),
                    )
                    for group in groups
                ),
                return_exceptions=True,
            )
            published = [
                row
                for group, result in zip(groups, results, strict=True)
                if result is None
                for row in group
            ]
            if published:
                await conn.execute(
                    "DELETE FROM messaging.outbox WHERE id = ANY($1::bigint[])",
                    [row["id"] for row in published],
                )
            now = datetime.now(UTC)
            delay = OUTBOX_DELAY_SECONDS.labels(self._producer)
            for row in published:
                delay.observe((now - row["created_at"]).total_seconds())
            OUTBOX_PUBLISHED.labels(self._producer).inc(len(published))
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        return len(published)


def _group(rows: list[asyncpg.Record], size: int) -> list[list[asyncpg.Record]]:
    """Consecutive rows bound for the same place travel together, up to `size` per message:
    a consumer handles a message of 100 events for much less than 100 messages of one."""
    groups: list[list[asyncpg.Record]] = []
    for row in rows:
        key = (row["exchange"], row["routing_key"], row["headers"])
        if groups and len(groups[-1]) < size:
            last = groups[-1][0]
            if (last["exchange"], last["routing_key"], last["headers"]) == key:
                groups[-1].append(row)
                continue
        groups.append([row])
    return groups


async def pending_count(pool: asyncpg.Pool, producer: str) -> int:
    value: int = await pool.fetchval(
        "SELECT count(*) FROM messaging.outbox WHERE producer = $1", producer
    )
    return value
