"""The notifier's rows as plain data (no I/O): what the stores read and write, and the mapping
from a database record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from services.notifier.optin import IntroState
from shared.events import DeliveryKind, IntroData, Participant, ResourceData

if TYPE_CHECKING:
    import asyncpg


@dataclass(frozen=True, slots=True)
class IntroRecord:
    id: UUID
    mode: str
    state: IntroState
    intro: IntroData
    correlation_id: str
    proposed_at: datetime
    asked_until: datetime | None

    @property
    def participants(self) -> list[Participant]:
        """Whom a delivery's `positions` index."""
        return self.intro.participants


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    """A resource proposed to one person (resource.proposed.v1): no answers, no state of its
    own; its one delivery row says where it stands."""

    id: UUID
    resource: ResourceData
    correlation_id: str
    proposed_at: datetime

    @property
    def participants(self) -> list[Participant]:
        return [self.resource.recipient]


# What a delivery row belongs to (its `proposal_id`).
ProposalRecord = IntroRecord | ResourceRecord


@dataclass(frozen=True, slots=True)
class NewResource:
    resource: ResourceData
    correlation_id: str
    proposed_at: datetime


@dataclass(frozen=True, slots=True)
class NewIntro:
    intro: IntroData
    mode: str
    state: IntroState
    correlation_id: str
    proposed_at: datetime
    asked_until: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery row; its statuses and how they change: services/notifier/delivery_lifecycle.py."""

    id: UUID
    proposal_id: UUID
    kind: DeliveryKind
    positions: tuple[int, ...]
    recipient_source: str
    recipient_external_id: str
    channel: str
    channel_index: int
    status: str
    attempts: int
    generation: int
    not_before: datetime
    # Set while an attempt is in flight (recorded before its provider is called, cleared with
    # its result): when it started and its claim (services/notifier/in_flight.py).
    in_flight_since: datetime | None = None
    in_flight_token: UUID | None = None
    resends: int = 0

    @property
    def idempotency_key(self) -> str:
        """What a provider deduplicates on (`webhook-id`, Matrix's transaction id, the email's
        Message-ID): the same for every attempt on this channel, so a resend is the same
        message; another channel (a fallback) is another message."""
        return f"{self.id}.{self.channel_index}"


def intro_row(row: asyncpg.Record) -> IntroRecord:
    return IntroRecord(
        id=row["id"],
        mode=row["mode"],
        state=IntroState(row["state"]),
        intro=IntroData.model_validate(row["intro"]),
        correlation_id=row["correlation_id"],
        proposed_at=row["proposed_at"],
        asked_until=row["asked_until"],
    )


def delivery_row(row: asyncpg.Record) -> DeliveryRecord:
    return DeliveryRecord(
        id=row["id"],
        proposal_id=row["proposal_id"],
        kind=DeliveryKind(row["kind"]),
        positions=tuple(row["positions"]),
        recipient_source=row["recipient_source"],
        recipient_external_id=row["recipient_external_id"],
        channel=row["channel"],
        channel_index=row["channel_index"],
        status=row["status"],
        attempts=row["attempts"],
        generation=row["generation"],
        not_before=row["not_before"],
        in_flight_since=row["in_flight_since"],
        in_flight_token=row["in_flight_token"],
        resends=row["resends"],
    )
