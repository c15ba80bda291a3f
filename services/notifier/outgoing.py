"""What one delivery sends: its message rendered for the channel, its signed links (answer links
in an ask, the unsubscribe and preferences links in every message to one person), the generic
webhook's JSON (docs/notifier.md) and the idempotency key its provider may deduplicate on. Plain
Python: no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from services.notifier.channels.base import Outgoing
from services.notifier.checkin_messages import checkin_outgoing
from services.notifier.checkins import KINDS as CHECKIN_KINDS
from services.notifier.clock import Clock
from services.notifier.links import LinkAction, LinkMaker
from services.notifier.rendering import Links, MessageRenderer, Rendered, Style, Trusted
from services.notifier.store.rows import DeliveryRecord, IntroRecord, ProposalRecord
from shared.events import ChannelType, DeliveryKind, Participant


class OutgoingMaker:
    def __init__(self, renderer: MessageRenderer, links: LinkMaker, clock: Clock) -> None:
        self._renderer = renderer
        self._links = links
        self._clock = clock

    def make(
        self,
        proposal: ProposalRecord,
        delivery: DeliveryRecord,
        people: Sequence[Participant],
        channel: ChannelType,
        address: str,
        group: tuple[str, ...],
    ) -> Outgoing:
        """The message to `address` on `channel` (a Slack group DM: `group`, its members)."""
        person = people[0]
        now = self._clock.now().timestamp()
        # A group DM has no unsubscribe link: it would be one person's, shown to all.
        unsubscribe = (
            "" if group else self._links.unsubscribe(person.source, person.external_id, now)
        )
        preferences = (
            None
            if group
            else Trusted(self._links.preferences(person.source, person.external_id, now))
        )
        if isinstance(proposal, IntroRecord) and delivery.kind in CHECKIN_KINDS:
            return checkin_outgoing(
                self._renderer, self._links, proposal, delivery, channel, address, unsubscribe, now
            )
        if isinstance(proposal, IntroRecord):
            links = self._answer_links(proposal, delivery, person, unsubscribe, now)
            links = replace(links, preferences=preferences)
            rendered = self._renderer.render(
                delivery.kind, proposal.intro, delivery.positions, links
            )
            topics = [t.topic for t in proposal.intro.topics]
        else:
            links = Links(
                accept=None,
                decline=None,
                unsubscribe=Trusted(unsubscribe),
                preferences=preferences,
            )
            rendered = self._renderer.render_resource(proposal.resource, links)
            topics = list(proposal.resource.topics)
        payload = _payload(proposal, delivery, person, rendered, topics, links)
        return Outgoing(
            delivery_id=delivery.id,
            idempotency_key=delivery.idempotency_key,
            proposal_id=proposal.id,
            kind=delivery.kind,
            channel=channel,
            address=address,
            rendered=rendered,
            unsubscribe_url=unsubscribe,
            to_name=person.name,
            group=group,
            payload=payload,
        )

    def _answer_links(
        self,
        intro: IntroRecord,
        delivery: DeliveryRecord,
        person: Participant,
        unsubscribe: str,
        now: float,
    ) -> Links:
        """An ask's accept and decline links (valid a while past the ask's expiry), and the
        unsubscribe link."""
        if delivery.kind is not DeliveryKind.ASK:
            return Links(accept=None, decline=None, unsubscribe=Trusted(unsubscribe))
        asks_end = intro.asked_until.timestamp() if intro.asked_until else now

        def answer(action: LinkAction) -> Trusted:
            return Trusted(
                self._links.answer(action, intro.id, person.source, person.external_id, asks_end)
            )

        return Links(
            accept=answer(LinkAction.ACCEPT),
            decline=answer(LinkAction.DECLINE),
            unsubscribe=Trusted(unsubscribe),
        )


def _payload(
    proposal: ProposalRecord,
    delivery: DeliveryRecord,
    person: Participant,
    rendered: Rendered,
    topics: list[str],
    links: Links,
) -> dict[str, Any]:
    """The generic webhook's JSON (docs/notifier.md): `participants` with introductions,
    `resource` with resources."""
    payload: dict[str, Any] = {
        "version": 1,
        "type": f"roac.{delivery.kind.value}",
        "delivery_id": str(delivery.id),
        "proposal_id": str(proposal.id),
        "recipient": {
            "source": person.source,
            "external_id": person.external_id,
            "name": person.name,
        },
        "subject": rendered.subject,
        "text": rendered.chat[Style.PLAIN],
        "topics": topics,
        "links": {
            "accept": links.accept,
            "decline": links.decline,
            "unsubscribe": links.unsubscribe or None,
            "preferences": links.preferences,
        },
    }
    if isinstance(proposal, IntroRecord):
        if delivery.kind is DeliveryKind.INTRO:
            payload["participants"] = [
                {
                    "source": p.source,
                    "external_id": p.external_id,
                    "name": p.name,
                    "organization": p.organization,
                }
                for p in proposal.intro.participants
            ]
    else:
        resource = proposal.resource
        payload["resource"] = {
            "id": str(resource.resource_id),
            "url": resource.url,
            "title": resource.title,
            "reason": resource.reason,
        }
    return payload
