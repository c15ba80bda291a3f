"""`roac dlq list` and `roac dlq replay`: every parking queue, read and replayed.

roac parks what a consumer cannot handle in four dead-letter queues:

- `roac.matcher.dlq`, `roac.notifier.dlq`: parked by RabbitMQ (a message rejected, or over the
  delivery limit: `x-death`) or by the consumer (one failed event of a message, alone, with
  `x-roac-reason` and `x-roac-queue`); replayed to the queue `roac.matcher` / `roac.notifier`.
- `roac.notifier.deliveries.dlq`: a delivery out of attempts (the notifier, `x-roac-reason`) or
  a job the worker rejected (RabbitMQ). Replay makes a parked delivery pending again with a
  fresh budget of attempts and queues a new job, as `roac deliveries retry` does; a delivery
  still pending with the job's generation gets a job again; one sent, cancelled or rescheduled
  since drops the copy.
- `roac.ingest.ingress.dlq`: an invalid ingress message (ingest, `x-roac-reason`, the original
  routing key in `x-roac-routing-key`) or one RabbitMQ dead-lettered; replayed to the exchange
  `roac.ingress` with its original routing key, published as roac's own RabbitMQ user with the
  original sender in `x-roac-sender`, so ingest judges it as that sender again (its sources).

Events go back to their queue through the default exchange, not to `roac.events`: the topic
exchange would hand an event bound to two consumers (an erasure, an opt-out) to the one that
already applied it as well.

**Listing** reads each message with `basic.get` and hands it back by closing the channel (not
by a nack, which a quorum queue would count as a delivery). It shows the message id, the
reason (`x-roac-reason`, else RabbitMQ's `x-first-death-reason` / `x-death`), the event type or
routing key, the age (the `timestamp` property, the dead-lettering time, or the event's
`occurred_at`) and the size in bytes; never anything else of the body, which holds personal
data.

**Replay** is at most once per parked copy: each message is published with publisher confirms
(mandatory, persistent, with its `message_id`, `correlation_id`, `type` and the headers the
producer set), and only then the parked copy is acked. A crash between the two can publish a
message twice; every consumer deduplicates on event ids (the matcher's inbox, the notifier's
primary keys, the ingress's ids derived from the `message_id`). A run replays at most the
messages that were in the queue when it started, and stops at a copy it replayed itself
(`x-roac-replayed` holds the run's id), so a message that fails again and is parked again is
not replayed twice in one run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq.exceptions
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import ValidationError

from shared.db import create_pool
from shared.events import DeliveryRequested, decode_batch
from shared.settings import Settings
from shared.topology import (
    DELIVERY_QUEUE,
    INGRESS_EXCHANGE,
    INGRESS_QUEUE,
    MATCHER_QUEUE,
    NOTIFIER_QUEUE,
    QUEUE_HEADER,
    REASON_HEADER,
    REPLAYED_HEADER,
    ROUTING_KEY_HEADER,
    SENDER_HEADER,
)

# Set by RabbitMQ or by roac's parking, not by the producer: not copied to a replayed message.
_PARKING_HEADERS = (
    "x-death",
    "x-delivery-count",
    "x-first-death-",
    "x-last-death-",
    REASON_HEADER,
    QUEUE_HEADER,
    ROUTING_KEY_HEADER,
    REPLAYED_HEADER,
)
MAX_REASON_LENGTH = 200
# Messages a replay takes at most when RabbitMQ reports an empty queue (its count can lag).
_LAGGING_COUNT_BUDGET = 1000


@dataclass(frozen=True)
class ParkingQueue:
    name: str  # the parking queue
    origin: str  # the queue its messages were taken from
    aliases: tuple[str, ...]


PARKING_QUEUES: tuple[ParkingQueue, ...] = (
    ParkingQueue(MATCHER_QUEUE.dead_letter_queue, MATCHER_QUEUE.name, ("matcher",)),
    ParkingQueue(NOTIFIER_QUEUE.dead_letter_queue, NOTIFIER_QUEUE.name, ("notifier",)),
    ParkingQueue(DELIVERY_QUEUE.dead_letter_queue, DELIVERY_QUEUE.name, ("deliveries",)),
    ParkingQueue(INGRESS_QUEUE.dead_letter_queue, INGRESS_QUEUE.name, ("ingress",)),
)


class UnknownQueue(ValueError):
    def __init__(self, name: str) -> None:
        known = ", ".join(
            f"{q.name} ({' or '.join((*q.aliases, q.origin))})" for q in PARKING_QUEUES
        )
        super().__init__(f"unknown parking queue {name!r}: one of {known}")


def parking_queue(name: str) -> ParkingQueue:
    """The parking queue by its name, its consumer queue's name, or a short alias."""
    for queue in PARKING_QUEUES:
        if name in (queue.name, queue.origin, *queue.aliases):
            return queue
    raise UnknownQueue(name)


@dataclass(frozen=True)
class ParkedMessage:
    queue: str
    message_id: str | None
    reason: str
    kind: str  # the event type, or the ingress routing key
    age_seconds: float | None
    size: int


@dataclass
class ReplayReport:
    queue: str
    replayed: int = 0
    # Deliveries: already sent, cancelled or replaced by a newer job; their copy is dropped.
    already_done: int = 0
    # Left in the parking queue: no place to send them back to (shown with list).
    left: int = 0
    dry_run: bool = False
    messages: list[ParkedMessage] = field(default_factory=list)


def describe(queue: str, message: AbstractIncomingMessage) -> ParkedMessage:
    """What `list` shows of a parked message: never its body, beyond its size and the time its
    first event occurred."""
    headers = dict(message.headers or {})
    return ParkedMessage(
        queue=queue,
        message_id=message.message_id,
        reason=_reason(headers),
        kind=_kind(message, headers),
        age_seconds=_age(message, headers),
        size=len(message.body),
    )


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value)


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[-1], Mapping):
        # RabbitMQ puts the most recent death first; the first one is where it came from.
        return deaths[-1]
    return {}


def _reason(headers: Mapping[str, Any]) -> str:
    reason = headers.get(REASON_HEADER)
    if reason is None:
        death = _first_death(headers)
        died = headers.get("x-first-death-reason") or death.get("reason")
        where = headers.get("x-first-death-queue") or death.get("queue")
        if died is None:
            return "-"
        reason = f"{_text(died)} by RabbitMQ" + (f" in {_text(where)}" if where else "")
    text = "".join(c if c.isprintable() else "?" for c in _text(reason))
    return text[:MAX_REASON_LENGTH]


def _kind(message: AbstractIncomingMessage, headers: Mapping[str, Any]) -> str:
    if message.type:
        return message.type
    if ROUTING_KEY_HEADER in headers:
        return _text(headers[ROUTING_KEY_HEADER])
    keys = _first_death(headers).get("routing-keys")
    if isinstance(keys, list) and keys:
        return _text(keys[0])
    return "-"


def _age(message: AbstractIncomingMessage, headers: Mapping[str, Any]) -> float | None:
    when = message.timestamp or _first_death(headers).get("time")
    if not isinstance(when, datetime):
        try:
            first = json.loads(message.body)["events"][0]["occurred_at"]
            when = datetime.fromisoformat(first)
        except (ValueError, KeyError, IndexError, TypeError):
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - when).total_seconds())


def _target(queue: ParkingQueue, headers: Mapping[str, Any]) -> tuple[str, str] | None:
    """(exchange, routing key) a parked message goes back to, or None when unknown."""
    if queue.origin == INGRESS_QUEUE.name:
        key = headers.get(ROUTING_KEY_HEADER)
        if key is None:
            keys = _first_death(headers).get("routing-keys")
            key = keys[0] if isinstance(keys, list) and keys else None
        return (INGRESS_EXCHANGE.name, _text(key)) if key is not None else None
    return "", queue.origin


async def list_parked(
    settings: Settings, queues: list[str] | None = None, *, limit: int | None = None
) -> list[ParkedMessage]:
    """Every message of the given parking queues (default: all), read and handed back."""
    chosen = [parking_queue(q) for q in queues] if queues else list(PARKING_QUEUES)
    connection = await aio_pika.connect(settings.amqp_url)
    found: list[ParkedMessage] = []
    try:
        for queue in chosen:
            channel = await connection.channel()
            try:
                try:
                    declared = await channel.declare_queue(queue.name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    continue  # not declared yet: no service ever started here, nothing parked
                while limit is None or len(found) < limit:
                    message = await declared.get(no_ack=False, fail=False)
                    if message is None:
                        break
                    found.append(describe(queue.name, message))
            finally:
                # Closing the channel hands every message back, uncounted as a delivery.
                if not channel.is_closed:
                    await channel.close()
    finally:
        await connection.close()
    return found


async def replay(
    settings: Settings, queue_name: str, *, limit: int | None = None, dry_run: bool = False
) -> ReplayReport:
    """Send parked messages back where they came from, each at most once (module docstring)."""
    queue = parking_queue(queue_name)
    report = ReplayReport(queue=queue.name, dry_run=dry_run)
    if dry_run:
        report.messages = await list_parked(settings, [queue.name], limit=limit)
        report.replayed = len(report.messages)
        return report
    run = uuid.uuid4().hex
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            declared = await channel.declare_queue(queue.name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return report  # not declared yet: nothing was ever parked there
        # RabbitMQ's count of a quorum queue can lag just after a message was parked.
        remaining = declared.declaration_result.message_count or _LAGGING_COUNT_BUDGET
        seen: set[str] = set()
        deliveries = _DeliveryReplay(settings) if queue.origin == DELIVERY_QUEUE.name else None
        try:
            while remaining > 0 and (limit is None or report.replayed < limit):
                message = await declared.get(no_ack=False, fail=False)
                if message is None:
                    break
                remaining -= 1
                headers = dict(message.headers or {})
                again = message.message_id is not None and message.message_id in seen
                if again or _text(headers.get(REPLAYED_HEADER, "")) == run:
                    await message.nack(requeue=True)  # replayed by this run, parked again
                    break
                if message.message_id is not None:
                    seen.add(message.message_id)
                report.messages.append(describe(queue.name, message))
                if deliveries is not None:
                    outcome = await deliveries.reset(message)
                    if outcome != "republish":
                        await message.ack()  # after the reset committed
                        if outcome == "reset":
                            report.replayed += 1
                        else:
                            report.already_done += 1
                        continue
                target = _target(queue, headers)
                if target is None:
                    await message.nack(requeue=True)
                    report.left += 1
                    continue
                user_id = None
                if queue.origin == INGRESS_QUEUE.name:
                    # Judged again as its original sender, which ingest reads back from a
                    # message published as roac's own user.
                    user_id = settings.amqp_user
                    headers[SENDER_HEADER] = recorded_sender(
                        message.user_id, headers, roac_user=settings.amqp_user
                    )
                await _republish(channel, message, headers, target, run, user_id=user_id)
                await message.ack()
                report.replayed += 1
        finally:
            if deliveries is not None:
                await deliveries.close()
    finally:
        await connection.close()
    return report


def recorded_sender(user_id: str | None, headers: Mapping[str, Any], *, roac_user: str) -> str:
    """Who sent a parked ingress message, for its replay (`x-roac-sender`, empty for nobody).
    A copy ingest parked carries roac's own `user_id` (RabbitMQ checks it), so its sender
    header is ingest's. Anything else RabbitMQ dead-lettered itself (rejected, over the
    delivery limit, expired): its headers are the integration's, a forged sender header
    included, and only its `user_id` says who sent it."""
    if user_id == roac_user and SENDER_HEADER in headers:
        return _text(headers[SENDER_HEADER])
    return user_id or ""


async def _republish(
    channel: AbstractChannel,
    message: AbstractIncomingMessage,
    headers: Mapping[str, Any],
    target: tuple[str, str],
    run: str,
    *,
    user_id: str | None,
) -> None:
    kept = {k: v for k, v in headers.items() if not k.startswith(_PARKING_HEADERS)}
    kept[REPLAYED_HEADER] = run
    exchange_name, routing_key = target
    exchange = (
        channel.default_exchange
        if exchange_name == ""
        else await channel.get_exchange(exchange_name, ensure=False)
    )
    await exchange.publish(
        aio_pika.Message(
            message.body,
            headers=kept,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            type=message.type,
            timestamp=message.timestamp,
            app_id=message.app_id,
            user_id=user_id,
        ),
        routing_key=routing_key,
        mandatory=True,
    )


class _DeliveryReplay:
    """A parked delivery job: its delivery, parked out of attempts, is made pending again with a
    fresh budget and a new job (through the outbox, which the notifier's relay publishes), as
    `roac deliveries retry` does; a delivery sent, cancelled or rescheduled since drops the
    copy; a delivery still pending with the job's generation (a job a bug made the worker
    reject) gets the job itself back."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None

    async def reset(self, message: AbstractIncomingMessage) -> str:
        """`reset` (a new job was queued), `done` (nothing to send) or `republish` (the job
        itself goes back: its delivery is pending, or the body is unreadable, which the worker
        then parks again with its reason)."""
        from services.notifier.scheduling import JobCause, requeue_parked_job
        from services.notifier.store.uow import NotifierStore

        try:
            jobs = [
                e for e in decode_batch(message.body).events if isinstance(e, DeliveryRequested)
            ]
        except ValidationError:
            return "republish"
        if self._pool is None:
            self._pool = await create_pool(self._settings, max_size=1)
        cause = JobCause("dlq-replay", None)
        outcome = "done"
        async with NotifierStore(self._pool).unit_of_work() as uow:
            for job in jobs:
                if await requeue_parked_job(uow, job.data, cause):
                    outcome = "reset"
        return outcome

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
