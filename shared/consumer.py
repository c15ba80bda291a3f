"""The one policy every roac consumer applies to an incoming AMQP message.

A subscriber declares the body it takes (`batch: DecodedBatch`, documented as an `EventBatch` in
the AsyncAPI document) and decodes it with `decode_event_batch`: the body is parsed by pydantic
once, in the decoder, and a body that does not parse reaches the handler as an `UnreadableBody`
rather than a framework error, so that it is parked by the policy below.

- A body that is not a valid `EventBatch` is rejected: it goes straight to the queue's
  dead-letter queue, parked with RabbitMQ's `x-death` record, and the consumer moves on. A body
  of several events of which only some are invalid (`{"events": [...]}`, one introduction with
  seven participants among a hundred) is split instead: see below.
- A transient failure (database or broker unreachable, deadlock, timeout) waits a little, then
  requeues the message; the quorum queue's delivery limit parks it if it never succeeds.
- Any other failure is a bug or a message the code cannot handle: a message of one event is
  rejected, hence parked.
- Success acks, and only after `apply` returned, i.e. after its transaction committed.

**One bad item never takes others down.** A message may carry events of several requests and
integrations (ingest's `CoalescingPublisher`, the outbox relay's batches of up to 100). When such
a message fails for a reason that is not transient (an event PostgreSQL refuses: a check
violation, a NUL; an event the schema refuses), the consumer does not park the whole message:
with a `parker` it validates the events one by one and applies the valid ones in halves, then
quarters, and so on (each part its own transaction, by `apply_item`), down to the single
events that fail; each of those is parked as a message of its own in the queue's dead-letter
queue with its reason in `x-roac-reason` (error class, SQLSTATE, table and constraint, or the
schema's field locations: never an input value), and the message is acked once every other
event was applied and every failed one parked (confirmed). A transient failure on the way
requeues the whole message: what was applied already is deduplicated on redelivery (inbox,
primary keys), and nothing was parked yet.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import aiormq.exceptions
import asyncpg
from faststream.exceptions import NackMessage, RejectMessage
from faststream.message import StreamMessage
from faststream.rabbit import RabbitBroker
from faststream.rabbit.message import RabbitMessage
from pydantic import SkipValidation, TypeAdapter, ValidationError

from shared.errors import TransientError
from shared.events import EVENT_TYPES, Event, EventBatch, decode_batch, encode_batch
from shared.logs import correlation_id
from shared.metrics import (
    EVENT_AGE_SECONDS,
    EVENTS_CONSUMED,
    MESSAGE_HANDLING_SECONDS,
    MESSAGES_HANDLED,
)
from shared.redelivery import requeue_delay
from shared.shutdown import pause
from shared.topology import QUEUE_HEADER, REASON_HEADER

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

MAX_REASON_LENGTH = 500
CONTENT_TYPE = "application/json"
PARK_TIMEOUT_SECONDS = 30.0

Apply = Callable[[EventBatch], Awaitable[None]]
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


@dataclass(frozen=True)
class ParkedItem:
    """One event of a message, on its way to the parking queue on its own."""

    body: bytes
    reason: str
    message_id: str | None
    type: str | None
    correlation_id: str | None


class Parker(Protocol):
    async def park(self, item: ParkedItem) -> None: ...


class QueueParker:
    """Publishes a parked item to `queue`'s dead-letter queue (default exchange), persistent,
    mandatory and confirmed, with its reason and the queue it came from in headers."""

    def __init__(self, broker: RabbitBroker, queue: str) -> None:
        self._broker = broker
        self._queue = queue

    async def park(self, item: ParkedItem) -> None:
        await self._broker.publish(
            item.body,
            exchange="",
            routing_key=f"{self._queue}.dlq",
            persist=True,
            mandatory=True,
            message_id=item.message_id,
            correlation_id=item.correlation_id,
            content_type=CONTENT_TYPE,
            message_type=item.type,
            timeout=PARK_TIMEOUT_SECONDS,
            timestamp=datetime.now(UTC),  # `roac dlq list` shows the age
            headers={REASON_HEADER: item.reason, QUEUE_HEADER: self._queue},
        )


@dataclass(frozen=True)
class UnreadableBody:
    """A body that is not a valid `EventBatch`, as the decoder found it: `handle_message` parks
    it (whole, or its invalid events alone)."""

    body: bytes
    error: ValidationError


if TYPE_CHECKING:
    DecodedBatch = EventBatch | UnreadableBody
else:
    # What a subscriber's handler declares. FastStream documents the annotation (an
    # EventBatch: the contract) and, told to skip validation, hands over what the decoder made
    # of the body as it is: parsed once, and an unreadable body kept for the parking policy
    # instead of failing in FastStream's argument validation.
    DecodedBatch = SkipValidation[EventBatch]


async def decode_event_batch(message: StreamMessage[Any]) -> EventBatch | UnreadableBody:
    """FastStream decoder of an `EventBatch` body (see the module's docstring)."""
    try:
        return decode_batch(message.body)
    except ValidationError as exc:
        return UnreadableBody(message.body, exc)


def _delivery_count(message: RabbitMessage) -> int:
    value = (message.raw_message.headers or {}).get("x-delivery-count", 0)
    return value if isinstance(value, int) else 0


async def handle_message(
    message: RabbitMessage,
    *,
    service: str,
    queue: str,
    apply: Callable[[EventBatch], Awaitable[None]],
    apply_item: Apply | None = None,
    parker: Parker | None = None,
    decoded: EventBatch | UnreadableBody | None = None,
) -> None:
    """Run `apply` on the message's batch, and translate the outcome into ack, requeue or
    reject.

    `decoded` is what `decode_event_batch` made of the body; without it (a subscriber that
    skips decoding) the body is decoded here. With a `parker`, a message of several events that
    fails for a non-transient reason is split: `apply_item` (default `apply`; the matcher passes
    its service, not its coalescer) applies the good events, the parker parks each bad one
    alone."""
    started = time.perf_counter()
    message_id = message.message_id
    invalid: list[ParkedItem] = []
    if decoded is None:
        decoded = await decode_event_batch(message)
    if isinstance(decoded, UnreadableBody):
        split = _split_body(decoded.body) if parker is not None else None
        if split is None:
            # Field locations and error types only: the input values may hold personal data.
            errors = decoded.error.errors()[:5]
            problems = [(".".join(map(str, e["loc"])), e["type"]) for e in errors]
            log.error("parking malformed message %s from %s: %s", message_id, queue, problems)
            MESSAGES_HANDLED.labels(service, queue, "rejected").inc()
            raise RejectMessage() from decoded.error
        batch, invalid = split
    else:
        batch = decoded
    correlation_id.set(batch.events[0].correlation_id if batch.events else None)
    failed: list[ParkedItem] = []
    try:
        if batch.events:
            try:
                await apply(batch)
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:
                if parker is None or len(batch.events) + len(invalid) < 2:
                    raise
                log.warning(
                    "message %s from %s failed (%s): applying its %d events separately",
                    message_id,
                    queue,
                    type(exc).__name__,
                    len(batch.events),
                )
                half = len(batch.events) // 2
                if len(batch.events) == 1:
                    failed.append(_parked_event(batch.events[0], exc))
                else:
                    for part in (batch.events[:half], batch.events[half:]):
                        failed += await _apply_apart(apply_item or apply, part)
        if parker is not None:
            for item in invalid + failed:
                try:
                    await parker.park(item)
                except Exception as exc:  # not confirmed: the whole message is requeued
                    raise TransientError(f"parking an event failed: {exc!r}") from exc
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
    for item in invalid + failed:
        # The reason names classes, constraints and field locations, never an input value.
        log.error(
            "parked event %s (%s) of message %s from %s alone: %s",
            item.message_id,
            item.type,
            message_id,
            queue,
            item.reason,
        )
        kind = item.type if item.type in EVENT_TYPES else "unknown"
        EVENTS_CONSUMED.labels(service, kind, "parked").inc()
    MESSAGES_HANDLED.labels(service, queue, "acked").inc()
    MESSAGE_HANDLING_SECONDS.labels(service, queue).observe(time.perf_counter() - started)
    if batch.events:
        now = datetime.now(UTC)
        age = EVENT_AGE_SECONDS.labels(service, batch.type)
        for event in batch.events:
            age.observe((now - event.occurred_at).total_seconds())


async def _apply_apart(apply: Apply, events: Sequence[Event]) -> list[ParkedItem]:
    """Apply `events` in one transaction, or, if that fails for a reason that is not
    transient, in halves, down to the single events that fail: those are returned to be
    parked. A transient error propagates (the whole message is requeued)."""
    try:
        await apply(EventBatch.model_construct(events=list(events)))
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - narrowed down below, then parked with its reason
        if len(events) == 1:
            return [_parked_event(events[0], exc)]
        half = len(events) // 2
        return await _apply_apart(apply, events[:half]) + await _apply_apart(apply, events[half:])
    return []


def _parked_event(event: Event, exc: Exception) -> ParkedItem:
    return ParkedItem(
        body=encode_batch([event]),
        reason=failure_reason(exc),
        message_id=str(event.message_id),
        type=event.type,
        correlation_id=event.correlation_id,
    )


def failure_reason(exc: BaseException) -> str:
    """Why an event could not be applied, without any of its values: PostgreSQL's class,
    SQLSTATE, table, column and constraint (its message may quote the input), or the class of
    any other exception."""
    if isinstance(exc, asyncpg.PostgresError):
        parts = [f"{type(exc).__name__} (SQLSTATE {exc.sqlstate})"]
        table = getattr(exc, "table_name", None)
        if table:
            schema = getattr(exc, "schema_name", None)
            parts.append(f"table {schema}.{table}" if schema else f"table {table}")
        column = getattr(exc, "column_name", None)
        if column:
            parts.append(f"column {column}")
        constraint = getattr(exc, "constraint_name", None)
        if constraint:
            parts.append(f"constraint {constraint}")
        return ", ".join(parts)[:MAX_REASON_LENGTH]
    return f"{type(exc).__name__} while applying the event"[:MAX_REASON_LENGTH]


def validation_reason(exc: ValidationError) -> str:
    """`N invalid fields: data.participants: too_long (List should have at most 6 items ...)`:
    field locations, error types and messages that do not repeat the input."""
    errors = exc.errors()
    noun = "field" if len(errors) == 1 else "fields"
    parts = []
    for error in errors[:10]:
        location = ".".join(map(str, error["loc"])) or "event"
        text = str(error.get("msg", ""))
        value = error.get("input")
        if isinstance(value, str | int | float) and str(value) and str(value) in text:
            text = ""
        parts.append(f"{location}: {error['type']}" + (f" ({text})" if text else ""))
    more = f"; and {len(errors) - 10} more" if len(errors) > 10 else ""
    return (f"{len(errors)} invalid {noun}: " + "; ".join(parts) + more)[:MAX_REASON_LENGTH]


def _split_body(raw: bytes) -> tuple[EventBatch, list[ParkedItem]] | None:
    """The valid events of a body `{"events": [...]}` of several items, and the invalid ones
    to park, each alone; None when the body is not such a document (then it is parked whole).
    Events of another type than the first valid one's are parked too (one type per message)."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or set(document) != {"events"}:
        return None
    items = document["events"]
    if not isinstance(items, list) or len(items) < 2 or len(items) > 10_000:
        return None
    valid: list[Event] = []
    invalid: list[ParkedItem] = []
    for item in items:
        fields: dict[str, Any] = item if isinstance(item, dict) else {}
        try:
            event = _EVENT.validate_python(item)
        except ValidationError as exc:
            reason = validation_reason(exc)
        else:
            if not valid or event.type == valid[0].type:
                valid.append(event)
                continue
            reason = f"type {event.type} in a message of {valid[0].type}"
        invalid.append(
            ParkedItem(
                body=json.dumps({"events": [item]}, separators=(",", ":")).encode(),
                reason=reason,
                message_id=_text(fields.get("message_id")),
                type=_text(fields.get("type")),
                correlation_id=_text(fields.get("correlation_id")),
            )
        )
    return EventBatch.model_construct(events=valid), invalid


def _text(value: object) -> str | None:
    """A property copied from an invalid item: short, printable text or nothing."""
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
        return value
    return None


async def skip_decoding(message: object) -> None:
    """FastStream decoder that leaves the body alone, for a handler that takes the raw message
    (ingest's ingress, whose bodies its own validation reads by routing key)."""
    return None
