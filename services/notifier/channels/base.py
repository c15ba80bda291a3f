"""What every channel receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from services.notifier.rendering import Rendered
from shared.events import ChannelType, DeliveryKind


@dataclass(frozen=True)
class Outgoing:
    delivery_id: UUID
    # Stable per (delivery, channel): providers that deduplicate (Matrix transaction ids, the
    # generic webhook's Idempotency-Key) see the same key on every retry.
    idempotency_key: str
    proposal_id: UUID
    kind: DeliveryKind
    channel: ChannelType
    address: str
    rendered: Rendered
    unsubscribe_url: str
    to_name: str = ""
    # Slack app mode: every member id of a group DM (address is the first).
    group: tuple[str, ...] = ()
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sent:
    provider_id: str
    # The provider announced a limit: nothing more to this destination for this many seconds.
    hold_for: float | None = None


class Channel(Protocol):
    def rate_key(self, out: Outgoing) -> str | None:
        """The destination whose pace is limited, or None for no pacing."""
        ...

    async def send(self, out: Outgoing) -> Sent: ...
