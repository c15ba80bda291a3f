"""Which deliveries a step of an introduction (or a resource proposal) needs, and when each may
go out: plain Python."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from services.notifier.delivery_policy import delivery_id
from services.notifier.quiet_hours import earliest_delivery
from shared.events import ChannelType, DeliveryKind, IntroData, ResourceData

GROUP_SOURCE = "group"


@dataclass(frozen=True)
class QuietHours:
    enabled: bool
    start: int
    end: int
    fallback_timezone: str

    def earliest(self, now: datetime, timezone: str | None) -> datetime:
        if not self.enabled:
            return now
        return earliest_delivery(
            now, timezone, start=self.start, end=self.end, fallback_timezone=self.fallback_timezone
        )


@dataclass(frozen=True)
class PlannedDelivery:
    id: UUID
    proposal_id: UUID
    kind: DeliveryKind
    positions: tuple[int, ...]
    recipient_source: str
    recipient_external_id: str
    channel: ChannelType
    not_before: datetime
    channel_index: int = 0


def first_channel(intro: IntroData, position: int) -> ChannelType | None:
    channels = intro.participants[position].channels
    return channels[0].type if channels else None


def plan(
    kind: DeliveryKind,
    intro: IntroData,
    positions: Sequence[int],
    now: datetime,
    quiet: QuietHours,
) -> list[PlannedDelivery]:
    """One delivery per person, except the introduction to people whose first channel is Slack
    (app mode): they share one group DM, sent when the first of them may be messaged."""
    groups: list[tuple[int, ...]] = []
    if kind is DeliveryKind.INTRO:
        on_slack = tuple(p for p in positions if first_channel(intro, p) is ChannelType.SLACK)
        if len(on_slack) > 1:
            groups.append(on_slack)
            positions = [p for p in positions if p not in on_slack]
    groups += [(p,) for p in positions]
    planned = []
    for members in groups:
        first = intro.participants[members[0]]
        if len(members) > 1:
            source, external_id = GROUP_SOURCE, "slack:" + ",".join(map(str, members))
            channel = ChannelType.SLACK
        else:
            source, external_id = first.source, first.external_id
            channel = first_channel(intro, members[0]) or ChannelType.EMAIL
        planned.append(
            PlannedDelivery(
                id=delivery_id(intro.proposal_id, kind.value, f"{source}/{external_id}"),
                proposal_id=intro.proposal_id,
                kind=kind,
                positions=members,
                recipient_source=source,
                recipient_external_id=external_id,
                channel=channel,
                not_before=quiet.earliest(now, first.timezone),
            )
        )
    return planned


def plan_resource(resource: ResourceData, now: datetime, quiet: QuietHours) -> PlannedDelivery:
    """The one delivery of a resource proposal: to its recipient, on their first channel."""
    person = resource.recipient
    return PlannedDelivery(
        id=delivery_id(
            resource.proposal_id,
            DeliveryKind.RESOURCE.value,
            f"{person.source}/{person.external_id}",
        ),
        proposal_id=resource.proposal_id,
        kind=DeliveryKind.RESOURCE,
        positions=(0,),
        recipient_source=person.source,
        recipient_external_id=person.external_id,
        channel=person.channels[0].type if person.channels else ChannelType.EMAIL,
        not_before=quiet.earliest(now, person.timezone),
    )
