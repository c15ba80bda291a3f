"""Ingest's subscriber to the AMQP ingress (docs/ingress.md), and the adapter that parks invalid
messages. The decisions are `services/ingest/amqp_ingress.py`'s."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from faststream.exceptions import NackMessage, RejectMessage
from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage

from services.ingest.amqp_ingress import (
    Ingress,
    IngressMessage,
    Outcome,
    ParkFailed,
    sender_of,
)
from shared.broker import PUBLISH_TIMEOUT_SECONDS
from shared.consumer import skip_decoding
from shared.topology import (
    INGRESS_EXCHANGE,
    INGRESS_QUEUE,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    SENDER_HEADER,
)

# Headers RabbitMQ or roac set on a message, not the integration: not copied to a parked message.
_BROKER_HEADERS = ("x-death", "x-delivery-count", "x-first-death-", "x-last-death-", "x-roac-")


def register(broker: RabbitBroker, ingress: Ingress, *, roac_user: str) -> None:
    @broker.subscriber(
        INGRESS_QUEUE.rabbit_queue(declare=False),
        decoder=skip_decoding,
        title="ingest.ingress",
        description=(
            f"People and interests published by integrations to {INGRESS_EXCHANGE.name} "
            "(routing key `contacts` or `interests`, the bodies of POST /v1/contacts and "
            "/v1/interests, `message_id` required): validated as over HTTP, then published as "
            "events; what fails validation is parked with the reason in `x-roac-reason`."
        ),
    )
    async def on_ingress_message(message: RabbitMessage) -> None:
        outcome = await ingress.handle(ingress_message(message, roac_user=roac_user))
        if outcome is Outcome.REQUEUED:
            raise NackMessage(requeue=True)
        if outcome is Outcome.REJECTED:
            raise RejectMessage()


def ingress_message(message: RabbitMessage, *, roac_user: str) -> IngressMessage:
    raw = message.raw_message
    headers = dict(raw.headers or {})
    count = headers.get("x-delivery-count", 0)
    return IngressMessage(
        body=message.body,
        routing_key=raw.routing_key or "",
        message_id=raw.message_id,
        # The sender, also of a message roac replays (`sender_of`).
        user_id=sender_of(raw.user_id, headers, roac_user=roac_user),
        correlation_id=raw.correlation_id,
        content_type=raw.content_type,
        headers=headers,
        delivery_count=count if isinstance(count, int) else 0,
    )


class QueueParker:
    """Publishes the original body to the ingress parking queue (default exchange), persistent
    and confirmed, with the reason, the original routing key and sender in headers, as roac's
    own RabbitMQ user (`user_id`, which RabbitMQ checks): that is how a replay tells headers
    ingest wrote from those an integration put on a message RabbitMQ dead-lettered itself."""

    def __init__(self, broker: RabbitBroker, *, roac_user: str) -> None:
        self._broker = broker
        self._roac_user = roac_user

    async def park(self, message: IngressMessage, reason: str) -> None:
        headers: dict[str, Any] = {
            key: value
            for key, value in message.headers.items()
            if not key.startswith(_BROKER_HEADERS)
        }
        headers[REASON_HEADER] = reason
        headers[ROUTING_KEY_HEADER] = message.routing_key
        # RabbitMQ lets only the connection's own user set user_id: the parked copy cannot
        # keep it, so who sent it travels here, for a replay to be judged as them.
        headers[SENDER_HEADER] = message.user_id or ""
        try:
            await self._broker.publish(
                message.body,
                exchange="",
                routing_key=INGRESS_QUEUE.dead_letter_queue,
                persist=True,
                mandatory=True,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                content_type=message.content_type,
                timeout=PUBLISH_TIMEOUT_SECONDS,
                timestamp=datetime.now(UTC),  # `roac dlq list` shows the age
                headers=headers,
                user_id=self._roac_user,
            )
        except Exception as exc:
            raise ParkFailed(type(exc).__name__) from exc
