"""Round planning lists everyone left out of a round with the reason, those who sat it out
(paused, opted out, unreachable, at the weekly cap) as well as those no group took."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.matcher.constraints import Person, Rules
from services.matcher.round_planning import (
    CAP_REACHED,
    NO_CHANNEL,
    NO_INTERESTS,
    OPTED_OUT,
    RoundParams,
    plan_round,
    unavailable_reason,
)
from services.matcher.scoring import Interest, TopicStats
from shared.events import InterestKind

NOW = datetime(2026, 12, 7, 9, tzinfo=UTC)
PARAMS = RoundParams(group_size=2, serendipity=0.0, seed=1, top_k=10, per_topic=30)


def test_everyone_who_sits_out_is_left_out_with_the_reason() -> None:
    people = {
        1: Person(1),
        2: Person(2),
        3: Person(3, snoozed_until=datetime(2027, 1, 4, 8, tzinfo=UTC)),
        4: Person(4, opted_out=True),
        5: Person(5, recent_intros=2),
        6: Person(6, deliverable=False),
        7: Person(7),
    }
    interests = {
        p: [Interest(1, InterestKind.LIKES, 1.0)] for p in people if p != 7
    }  # 7 declared nothing
    plan = plan_round(
        people, interests, {1: TopicStats("rust", 6)}, 100, {}, Rules(cap_per_week=2), PARAMS, NOW
    )
    assert [g.members for g in plan.groups] == [(1, 2)]
    assert plan.unplaced == (
        (7, NO_INTERESTS),  # eligible, not placed: first
        (3, "paused until 2027-01-04"),
        (4, OPTED_OUT),
        (5, CAP_REACHED),
        (6, NO_CHANNEL),
    )
    stats = plan.stats
    assert stats["pool_members"] == 7
    assert stats["eligible"] == 3
    assert stats["unavailable"] == 4
    assert stats["unavailable_reasons"] == {
        "paused": 1,
        OPTED_OUT: 1,
        CAP_REACHED: 1,
        NO_CHANNEL: 1,
    }
    assert stats["unplaced"] == 1  # eligible people no group took: coverage is placed / eligible
    assert stats["left_out"] == 5
    assert stats["coverage"] == round(2 / 3, 4)


def test_a_pause_that_ended_is_no_reason_and_the_cap_is_the_last_one() -> None:
    ended = Person(1, snoozed_until=NOW - timedelta(days=1), recent_intros=3)
    assert unavailable_reason(ended, NOW) == CAP_REACHED
    both = Person(2, opted_out=True, snoozed_until=NOW + timedelta(days=3))
    assert unavailable_reason(both, NOW) == OPTED_OUT
