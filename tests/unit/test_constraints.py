"""The matching rules and the candidate graph, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.matcher.availability import available
from services.matcher.candidate_graph import build_candidate_graph
from services.matcher.constraints import (
    Person,
    RuleLevel,
    Rules,
    forbidden,
    preference_factor,
    waiting_bonus,
)
from services.matcher.scoring import Interest, TopicStats, decayed_weight, topic_boost
from shared.events import InterestKind

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
LIKES, SEEKS, OFFERS = InterestKind.LIKES, InterestKind.SEEKS, InterestKind.OFFERS


def test_availability_follows_cap_snooze_and_opt_out() -> None:
    rules = Rules(cap_per_week=2)
    assert available(Person(1, recent_intros=1), NOW, rules)
    assert not available(Person(1, recent_intros=2), NOW, rules)
    assert not available(Person(1, snoozed_until=NOW + timedelta(hours=1)), NOW, rules)
    assert available(Person(1, snoozed_until=NOW - timedelta(hours=1)), NOW, rules)
    assert not available(Person(1, opted_out=True), NOW, rules)


def test_blocks_past_meetings_and_self_are_forbidden_both_ways() -> None:
    rules = Rules()
    assert forbidden(Person(1, blocked=frozenset({2})), Person(2), rules)
    assert forbidden(Person(2), Person(1, blocked=frozenset({2})), rules)
    assert forbidden(Person(1), Person(2, met=frozenset({1})), rules)
    assert forbidden(Person(1), Person(1), rules)
    assert not forbidden(Person(1), Person(2), rules)


def test_organisation_rule_levels() -> None:
    a, b = Person(1, organization="Acme Inc"), Person(2, organization=" acme  INC ")
    assert forbidden(a, b, Rules())
    relaxed = Rules(different_organization=RuleLevel.PREFERRED)
    assert not forbidden(a, b, relaxed)
    assert preference_factor(a, b, relaxed) == 0.5
    off = Rules(different_organization=RuleLevel.OFF)
    assert preference_factor(a, b, off) == 1.0
    # No organisation on either side is not "the same organisation".
    assert not forbidden(Person(1), Person(2), Rules())


def test_timezone_rule() -> None:
    a, b = Person(1, timezone="Europe/Berlin"), Person(2, timezone="America/Lima")
    assert forbidden(a, b, Rules(same_timezone=RuleLevel.REQUIRED))
    assert preference_factor(a, b, Rules(same_timezone=RuleLevel.PREFERRED)) == 0.5


def test_unknown_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown rules"):
        Rules.from_mapping(2, {"same_team": "required"})


def test_waiting_longer_earns_a_bigger_bonus() -> None:
    assert waiting_bonus(NOW, NOW) == 1.0
    assert waiting_bonus(NOW - timedelta(days=14), NOW) == pytest.approx(1.25)
    assert waiting_bonus(NOW - timedelta(days=400), NOW) == 1.5
    assert waiting_bonus(None, NOW) == 1.5


def test_interests_decay_with_age_and_meetings_raise_a_topic() -> None:
    assert decayed_weight(2.0, NOW, NOW, 365) == 2.0
    assert decayed_weight(2.0, NOW - timedelta(days=365), NOW, 365) == pytest.approx(1.0)
    assert decayed_weight(1.0, NOW - timedelta(days=730), NOW, 365) == pytest.approx(0.25)
    assert topic_boost(0) == 1.0
    assert topic_boost(4) == pytest.approx(1.2)
    assert topic_boost(1000) == 2.0


def _graph(interests: dict[int, list[Interest]], **kwargs: object) -> dict[tuple[int, int], float]:
    topics = {
        t: TopicStats(f"t{t}", sum(any(i.topic_id == t for i in v) for v in interests.values()))
        for v in interests.values()
        for t in {i.topic_id for i in v}
    }
    options: dict[str, object] = {"top_k": 3, "per_topic": 50, "seed": 1} | kwargs
    return build_candidate_graph(interests, topics, len(interests), **options)  # type: ignore[arg-type]


def test_the_graph_links_people_through_compatible_topics_only() -> None:
    graph = _graph(
        {
            1: [Interest(10, SEEKS, 1.0)],
            2: [Interest(10, SEEKS, 1.0)],
            3: [Interest(10, OFFERS, 1.0)],
            4: [Interest(11, LIKES, 1.0)],
            5: [Interest(11, LIKES, 1.0)],
        }
    )
    assert set(graph) == {(1, 3), (2, 3), (4, 5)}


def test_the_graph_keeps_the_best_k_and_skips_excluded_pairs() -> None:
    people = {i: [Interest(1, LIKES, 1.0), Interest(2 + i % 2, LIKES, 1.0)] for i in range(10)}
    graph = _graph(people, top_k=2)
    for person in people:
        # everyone keeps at most k of their own; the union may give some a few more
        assert sum(person in edge for edge in graph) >= 1
    assert all((a % 2) == (b % 2) for a, b in graph)  # the shared second topic wins
    no_evens = _graph(people, top_k=2, excluded=lambda a, b: a % 2 == 0 and b % 2 == 0)
    assert not any(a % 2 == 0 and b % 2 == 0 for a, b in no_evens)


def test_the_graph_is_deterministic_for_a_seed() -> None:
    people = {i: [Interest(1, LIKES, 1.0), Interest(2 + i % 7, LIKES, 1.0)] for i in range(300)}
    assert _graph(people, per_topic=10, seed=5) == _graph(people, per_topic=10, seed=5)
    assert _graph(people, per_topic=10, seed=5) != _graph(people, per_topic=10, seed=6)


def test_a_rare_topics_holders_form_one_group_only_if_all_can_meet() -> None:
    from services.matcher.group_intros import topic_groups

    people = {i: Person(i) for i in range(1, 8)}
    people[7] = Person(7, snoozed_until=NOW + timedelta(days=1))
    rules = Rules()
    # topic 1: three strangers; topic 2: two people only; topic 3: includes a snoozed person.
    holders = {1: [1, 2, 3], 2: [4, 5], 3: [4, 5, 7]}
    assert topic_groups(holders, people, NOW, rules, max_size=6) == [(1, (1, 2, 3))]
    # Someone in a group is not in a second one in the same pass; two who met block a group.
    assert topic_groups({1: [1, 2, 3], 2: [3, 4, 5]}, people, NOW, rules, 6) == [(1, (1, 2, 3))]
    people[2] = Person(2, met=frozenset({3}))
    assert topic_groups({1: [1, 2, 3]}, people, NOW, rules, 6) == []
    assert topic_groups({1: [4, 5, 6]}, people, NOW, rules, max_size=2) == []
