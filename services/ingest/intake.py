"""Ingest's use case: turn validated items into events and hand them to RabbitMQ in one message.

One request is one AMQP message, so a request is accepted whole or not at all: either RabbitMQ
confirmed it (202) or nothing was published (503, safe to retry).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol
from uuid import uuid4

from services.ingest.metrics import EVENTS_ACCEPTED
from services.ingest.schemas import Accepted
from shared.events import ContactData, ContactUpserted, Event, InterestData, InterestDeclared

_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Publisher(Protocol):
    async def publish(self, events: Sequence[Event]) -> None: ...


class PublishFailed(Exception):
    """RabbitMQ did not confirm the events: nothing of the request was accepted."""


def correlation_id_from(header: str | None) -> str:
    """Keep the caller's correlation id when it is a sane token; otherwise mint one."""
    if header and _CORRELATION_ID.match(header):
        return header
    return str(uuid4())


class Intake:
    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def accept_contacts(
        self, items: Sequence[ContactData], *, correlation_id: str, integration: str
    ) -> Accepted:
        events = [
            ContactUpserted(
                source="ingest", correlation_id=correlation_id, integration=integration, data=item
            )
            for item in items
        ]
        return await self._accept(events, correlation_id, integration)

    async def accept_interests(
        self, items: Sequence[InterestData], *, correlation_id: str, integration: str
    ) -> Accepted:
        events = [
            InterestDeclared(
                source="ingest", correlation_id=correlation_id, integration=integration, data=item
            )
            for item in items
        ]
        return await self._accept(events, correlation_id, integration)

    async def _accept(
        self, events: Sequence[Event], correlation_id: str, integration: str
    ) -> Accepted:
        try:
            await self._publisher.publish(events)
        except Exception as exc:
            raise PublishFailed(type(exc).__name__) from exc
        EVENTS_ACCEPTED.labels(events[0].type, integration).inc(len(events))
        return Accepted(
            accepted=len(events),
            event_ids=[e.message_id for e in events],
            correlation_id=correlation_id,
        )
