"""A round serialises its proposal events by hand (for speed): they must be exactly what the
schema in shared/events.py accepts and means."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.matcher.round_planning import GroupTopic, PlannedGroup
from services.matcher.rounds import _topic_json, intro_event_body
from shared.events import IntroProposed, TopicRelation, decode_event, encode_event


def test_a_round_event_body_decodes_to_the_intended_event() -> None:
    details = {
        i: {
            "source": "crm",
            "external_id": str(i),
            "name": f"Person {i} <b>",
            "organization": None,
            "timezone": "Europe/Berlin",
            "channels": [{"type": "email", "address": f"p{i}@example.org"}],
        }
        for i in (1, 2)
    }
    group = PlannedGroup(
        (1, 2),
        3.21987,
        (
            GroupTopic("rust", TopicRelation.SEEKS_OFFERS, seeker=2, offerer=1),
            GroupTopic("kites", TopicRelation.SHARED),
        ),
        "You both care about kites.",
    )
    proposal_id, round_id = uuid.uuid4(), uuid.uuid4()
    now = datetime(2026, 11, 26, 9, tzinfo=UTC)
    topics = [_topic_json(t, details) for t in group.topics]
    encoded = intro_event_body(
        proposal_id, group, [details[1], details[2]], topics, round_id, "round-x", now.isoformat()
    )
    event = decode_event(encoded.body)
    assert isinstance(event, IntroProposed)
    assert event.message_id == encoded.message_id
    assert encoded.routing_key == event.type == "intro.proposed.v1"
    assert event.data.proposal_id == proposal_id
    assert event.data.round_id == round_id
    assert event.data.score == 3.2199
    assert [p.name for p in event.data.participants] == ["Person 1 <b>", "Person 2 <b>"]
    assert event.data.topics[0].seeker is not None
    assert event.data.topics[0].seeker.external_id == "2"
    assert event.data.topics[1].relation is TopicRelation.SHARED
    assert event.occurred_at == now
    assert event.data.checkin_after_seconds is None  # the notifier's default
    # and it survives the schema's own round trip unchanged
    assert decode_event(encode_event(event)) == event
    # A pool's own "did you meet?" delay travels with each of its introductions.
    three_days = intro_event_body(
        proposal_id,
        group,
        [details[1], details[2]],
        topics,
        round_id,
        "round-x",
        now.isoformat(),
        checkin_after_seconds=3 * 86400,
    )
    with_delay = decode_event(three_days.body)
    assert isinstance(with_delay, IntroProposed)
    assert with_delay.data.checkin_after_seconds == 3 * 86400
