"""The one policy every roac consumer applies to an incoming AMQP message.

- A body that is not a valid `EventBatch` is rejected: it goes straight to the queue's
  dead-letter queue, parked with RabbitMQ's `x-death` record, and the consumer moves on.
- A transient failure (database or broker unreachable, deadlock, timeout) waits a little, then
  requeues the message; the quorum queue's delivery limit parks it if it never succeeds.
- Any other failure is a bug or a message the code cannot handle: rejected, hence parked.
- Success acks, and only after `apply` returned, i.e. after its transaction committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiormq.exceptions
import asyncpg
from faststream.exceptions import NackMessage, RejectMessage
from faststream.rabbit.message import RabbitMessage
from pydantic import ValidationError

from shared.errors import TransientError
from shared.events import EventBatch, decode_batch
from shared.logs import correlation_id
from shared.metrics import EVENT_AGE_SECONDS, MESSAGE_HANDLING_SECONDS, MESSAGES_HANDLED
from shared.redelivery import requeue_delay
from shared.shutdown import pause

log = logging.getLogger("roac.consumer")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A pooled connection that PostgreSQL's shutdown caught mid-error ("cannot switch to state
    # 15; another operation (2) is in progress"), seen when PostgreSQL restarted under load: the
    # next attempt gets a fresh connection.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.AdminShutdownError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
)


def _delivery_count(message: RabbitMessage) -> int:
    value = (message.raw_message.headers or {}).get("x-delivery-count", 0)
    return value if isinstance(value, int) else 0


async def handle_message(
    message: RabbitMessage,
    *,
    service: str,
    queue: str,
    apply: Callable[[EventBatch], Awaitable[None]],
) -> None:
    """Decode the body, run `apply`, and translate the outcome into ack, requeue or reject."""
    started = time.perf_counter()
    message_id = message.message_id
    try:
        batch = decode_batch(message.body)
    except ValidationError as exc:
        # Field locations and error types only: the input values may hold personal data.
        problems = [(".".join(map(str, e["loc"])), e["type"]) for e in exc.errors()[:5]]
        log.error("parking malformed message %s from %s: %s", message_id, queue, problems)
        MESSAGES_HANDLED.labels(service, queue, "rejected").inc()
        raise RejectMessage() from exc
    correlation_id.set(batch.events[0].correlation_id)
    try:
        await apply(batch)
    except TRANSIENT_ERRORS as exc:
        attempts = _delivery_count(message)
        delay = requeue_delay(attempts)
        log.warning(
            "transient failure on message %s (delivery %d), requeueing in %.1fs: %r",
            message_id,
            attempts + 1,
            delay,
            exc,
        )
        await pause(delay)  # cut short by a shutdown: the message goes back at once
        MESSAGES_HANDLED.labels(service, queue, "requeued").inc()
        raise NackMessage(requeue=True) from exc
    except Exception as exc:
        log.exception("parking message %s from %s after an unexpected error", message_id, queue)
        MESSAGES_HANDLED.labels(service, queue, "rejected").inc()
        raise RejectMessage() from exc
    MESSAGES_HANDLED.labels(service, queue, "acked").inc()
    MESSAGE_HANDLING_SECONDS.labels(service, queue).observe(time.perf_counter() - started)
    now = datetime.now(UTC)
    age = EVENT_AGE_SECONDS.labels(service, batch.type)
    for event in batch.events:
        age.observe((now - event.occurred_at).total_seconds())


async def skip_decoding(message: object) -> None:
    """FastStream decoder that leaves the body alone: `handle_message` parses it itself, so a
    malformed body is rejected by roac's policy rather than by a framework error path."""
    return None
