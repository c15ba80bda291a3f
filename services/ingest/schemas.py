"""The HTTP API's request and response bodies. Items are the event payloads from shared/events.py,
so what an integration sends is exactly what the matcher receives."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from shared.events import ContactData, InterestData

MAX_BATCH_ITEMS = 1000


class ContactBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ContactData] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class InterestBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[InterestData] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return "batch" if "items" in value else "single"
    return "batch" if isinstance(getattr(value, "items", None), list) else "single"


ContactsBody = Annotated[
    Annotated[ContactData, Tag("single")] | Annotated[ContactBatch, Tag("batch")],
    Discriminator(_shape),
]
InterestsBody = Annotated[
    Annotated[InterestData, Tag("single")] | Annotated[InterestBatch, Tag("batch")],
    Discriminator(_shape),
]


class Accepted(BaseModel):
    """Returned with 202 once RabbitMQ has confirmed every event of the request."""

    accepted: int
    event_ids: list[UUID]
    correlation_id: str
