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
from datetime import UTC, datetime

import asyncpg

from shared.broker import EventPublisher
from shared.events import Event, encode_batch
from shared.metrics import OUTBOX_DELAY_SECONDS, OUTBOX_PUBLISHED, OUTBOX_RELAY_FAILURES

NOTIFY_CHANNEL = "roac_outbox"
log = logging.getLogger("roac.outbox")


async def enqueue(conn: asyncpg.Connection, producer: str, events: Sequence[Event]) -> None:
    """Add events to the outbox within the caller's transaction (one AMQP message each)."""
    if not events:
        return
    await conn.execute(
        """
        INSERT INTO messaging.outbox (producer, message_id, routing_key, correlation_id, body)
        SELECT $1, m, r, c, b
        FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bytea[]) AS t(m, r, c, b)
        """,
        producer,
        [e.message_id for e in events],
        [e.type for e in events],
        [e.correlation_id for e in events],
        [encode_batch([e]) for e in events],
    )
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, producer)


class OutboxRelay:
    """Publishes one producer's outbox rows until cancelled."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: EventPublisher,
        producer: str,
        *,
        database_url: str,
        batch_size: int = 200,
        poll_interval: float = 1.0,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._producer = producer
        self._database_url = database_url
        self._batch_size = batch_size
        self._poll_interval = poll_interval
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
                SELECT id, message_id, routing_key, correlation_id, body, created_at
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
            results = await asyncio.gather(
                *(
                    self._publisher.publish_encoded(
                        message_id=str(row["message_id"]),
                        routing_key=row["routing_key"],
                        body=row["body"],
                        correlation_id=row["correlation_id"],
                    )
                    for row in rows
                ),
                return_exceptions=True,
            )
            published = [row for row, result in zip(rows, results, strict=True) if result is None]
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


async def pending_count(pool: asyncpg.Pool, producer: str) -> int:
    value: int = await pool.fetchval(
        "SELECT count(*) FROM messaging.outbox WHERE producer = $1", producer
    )
    return value
