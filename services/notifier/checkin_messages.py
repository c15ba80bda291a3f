"""What a check-in delivery sends ("did you meet?"): the message in the person's language
(`checkin.*` templates, the reminder after a "not yet" with `again` set), its four one-click
answer links (signed like every link: services/notifier/links.py), the unsubscribe link and the
person's preferences page in the footer (as in every message to one person), and the generic
webhook's JSON (`"type": "roac.checkin"`). Plain Python: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.notifier.channels.base import Outgoing
from services.notifier.checkin_service import LINK_SECONDS
from services.notifier.links import LinkAction, LinkClaim, LinkMaker
from services.notifier.rendering import MessageRenderer, Style, Trusted, join_words
from services.notifier.store.rows import DeliveryRecord, IntroRecord
from shared.events import ChannelType, DeliveryKind, Participant


@dataclass(frozen=True)
class CheckinLinks:
    met: Trusted
    not_yet: Trusted
    didnt_happen: Trusted
    not_for_me: Trusted
    unsubscribe: Trusted
    preferences: Trusted


def checkin_outgoing(
    renderer: MessageRenderer,
    links: LinkMaker,
    intro: IntroRecord,
    delivery: DeliveryRecord,
    channel: ChannelType,
    address: str,
    unsubscribe: str,
    now: float,
) -> Outgoing:
    """The check-in to the one person at `delivery.positions`, on `channel` at `address`."""
    position = delivery.positions[0]
    person = intro.intro.participants[position]
    made = make_links(links, intro, person, unsubscribe, now)
    language = renderer.language_of(person)
    others = [p for i, p in enumerate(intro.intro.participants) if i != position]
    topics = [t.topic for t in intro.intro.topics]
    context = {
        "kind": delivery.kind.value,
        "recipient": person,
        "others_names": join_words([p.name for p in others], language),
        "topic": topics[0],
        "again": delivery.kind is DeliveryKind.CHECKIN_AGAIN,
        "links": made,
    }
    rendered = renderer.render_for("checkin", language, context)
    payload: dict[str, Any] = {
        "version": 1,
        "type": "roac.checkin",
        "delivery_id": str(delivery.id),
        "proposal_id": str(intro.id),
        "recipient": {
            "source": person.source,
            "external_id": person.external_id,
            "name": person.name,
        },
        "subject": rendered.subject,
        "text": rendered.chat[Style.PLAIN],
        "topics": topics,
        "links": {
            "met": made.met,
            "not_yet": made.not_yet,
            "didnt_happen": made.didnt_happen,
            "not_for_me": made.not_for_me,
            "unsubscribe": made.unsubscribe or None,
            "preferences": made.preferences,
        },
    }
    return Outgoing(
        delivery_id=delivery.id,
        idempotency_key=delivery.idempotency_key,
        proposal_id=intro.id,
        kind=delivery.kind,
        channel=channel,
        address=address,
        rendered=rendered,
        unsubscribe_url=unsubscribe,
        to_name=person.name,
        payload=payload,
    )


def make_links(
    links: LinkMaker, intro: IntroRecord, person: Participant, unsubscribe: str, now: float
) -> CheckinLinks:
    expires = int(now) + LINK_SECONDS

    def url(action: LinkAction) -> Trusted:
        claim = LinkClaim(action, person.source, person.external_id, expires, intro.id)
        return Trusted(links.url(claim))

    return CheckinLinks(
        met=url(LinkAction.CHECKIN_MET),
        not_yet=url(LinkAction.CHECKIN_NOT_YET),
        didnt_happen=url(LinkAction.CHECKIN_DIDNT_HAPPEN),
        not_for_me=url(LinkAction.CHECKIN_NOT_FOR_ME),
        unsubscribe=Trusted(unsubscribe),
        # A fresh link to their preferences page, as in the footer of every other message.
        preferences=Trusted(links.preferences(person.source, person.external_id, now)),
    )
