"""Live matching's decisions without a database: who gets which partner and why the others get
none (`live_planning.plan_pairs`), and the group introductions of a rare topic. Table-driven,
in memory; the integration tests (test_matcher_service.py, test_matcher_constraints.py) run the
same rules through PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.matcher.constraints import Person, RuleLevel, Rules
from services.matcher.group_intros import topic_groups, worth_a_group
from services.matcher.live_planning import (
    BELOW_THRESHOLD,
    UNAVAILABLE,
    LivePolicy,
    LiveView,
    pair_members,
    plan_pairs,
)
from services.matcher.scoring import Interest, TopicStats
from shared.events import InterestKind, TopicRelation

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
L, S, OF = InterestKind.LIKES, InterestKind.SEEKS, InterestKind.OFFERS
# Topic 1 rare (2 people), topic 2 common (90), topic 3 rare; a population of 100.
STATS = {1: TopicStats("kites", 2), 2: TopicStats("coffee", 90), 3: TopicStats("rust", 3)}


@dataclass
class Case:
    name: str
    # Each person's interests: (topic, kind) or (topic, kind, age in days).
    interests: dict[int, list[tuple[Any, ...]]]
    # Person -> candidates (what the topic index found).
    candidates: dict[int, set[int]]
    expected: dict[int, int | str]  # person -> partner, or why none
    people: dict[int, Person] = field(default_factory=dict)  # default: Person(id)
    rules: Rules = field(default_factory=Rules)
    min_score: float = 0.5


def _interest(spec: tuple[Any, ...]) -> Interest:
    topic, kind, *age = spec
    return Interest(topic, InterestKind(kind), 1.0, NOW - timedelta(days=age[0] if age else 0))


def _view(case: Case) -> LiveView:
    interests = {p: [_interest(i) for i in specs] for p, specs in case.interests.items()}
    everyone = set(case.candidates) | {c for cs in case.candidates.values() for c in cs}
    people = {p: case.people.get(p, Person(p)) for p in everyone if p not in case.people}
    people |= {p: person for p, person in case.people.items() if person is not None}
    own_topics = {i.topic_id for p in case.candidates for i in interests.get(p, [])}
    theirs = {
        c: [i for i in interests.get(c, []) if i.topic_id in own_topics]
        for cs in case.candidates.values()
        for c in cs
    }
    return LiveView(case.candidates, interests, theirs, STATS, 100, people)


CASES = [
    Case("two people liking a rare topic meet", {1: [(1, L)], 2: [(1, L)]}, {1: {2}}, {1: 2}),
    Case(
        "the rarer shared topic wins",
        {1: [(1, L), (2, L)], 2: [(2, L)], 3: [(1, L)]},
        {1: {2, 3}},
        {1: 3},
    ),
    Case("a seeker meets an offerer", {1: [(3, S)], 2: [(3, OF)]}, {1: {2}}, {1: 2}),
    Case(
        "two seekers are never each other's answer",
        {1: [(3, S)], 2: [(3, S)]},
        {1: {2}},
        {1: BELOW_THRESHOLD},
    ),
    Case(
        "two offerers neither",
        {1: [(3, OF)], 2: [(3, OF)]},
        {1: {2}},
        {1: BELOW_THRESHOLD},
    ),
    Case(
        "a common topic alone is below the threshold",
        {1: [(2, L)], 2: [(2, L)]},
        {1: {2}},
        {1: BELOW_THRESHOLD},
        min_score=1.0,
    ),
    Case(
        "ties go to the lowest id",
        {1: [(1, L)], 2: [(1, L)], 3: [(1, L)]},
        {1: {3, 2}},
        {1: 2},
    ),
    Case(
        "an older interest weighs less than a fresh one",
        {1: [(1, L)], 2: [(1, L, 730)], 3: [(1, L)]},
        {1: {2, 3}},
        {1: 3},
    ),
    Case(
        "the person at the cap waits",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}},
        {1: UNAVAILABLE},
        people={1: Person(1, recent_intros=2)},
    ),
    Case(
        "the person snoozed waits",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}},
        {1: UNAVAILABLE},
        people={1: Person(1, snoozed_until=NOW + timedelta(hours=1))},
    ),
    Case(
        "an expired snooze does not hold",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}},
        {1: 2},
        people={1: Person(1, snoozed_until=NOW - timedelta(hours=1))},
    ),
    Case(
        "an opted-out person is never proposed",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}},
        {1: UNAVAILABLE},
        people={1: Person(1, opted_out=True)},
    ),
    Case(
        "a person the store does not know is skipped, not a crash",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}},
        {1: UNAVAILABLE},
        people={1: None},  # type: ignore[dict-item]
    ),
    Case(
        "a candidate at the cap is passed over",
        {1: [(1, L)], 2: [(1, L)], 3: [(3, L), (1, L)]},
        {1: {2, 3}},
        {1: 3},
        people={2: Person(2, recent_intros=2)},
    ),
    Case(
        "a snoozed or opted-out candidate is passed over",
        {1: [(1, L)], 2: [(1, L)], 3: [(1, L)]},
        {1: {2, 3}},
        {1: BELOW_THRESHOLD},
        people={2: Person(2, opted_out=True), 3: Person(3, snoozed_until=NOW + timedelta(1))},
    ),
    Case(
        "a candidate the store does not know is passed over",
        {1: [(1, L)], 2: [(1, L)], 3: [(1, L)]},
        {1: {2, 3}},
        {1: 3},
        people={2: None},  # type: ignore[dict-item]
    ),
    Case(
        "a block holds in the blocker's direction",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}},
        {1: BELOW_THRESHOLD},
        people={1: Person(1, blocked=frozenset({2}))},
    ),
    Case(
        "a block holds in the blocked one's direction",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}},
        {1: BELOW_THRESHOLD},
        people={2: Person(2, blocked=frozenset({1}))},
    ),
    Case(
        "people already introduced are not introduced again",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}},
        {1: BELOW_THRESHOLD},
        people={2: Person(2, met=frozenset({1}))},
    ),
    Case(
        "colleagues are not introduced (required, spaces and case aside)",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}},
        {1: BELOW_THRESHOLD},
        people={1: Person(1, organization="Acme Inc"), 2: Person(2, organization=" acme  INC")},
    ),
    Case(
        "a preferred rule allows what a required one forbids",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}},
        {1: 2},
        people={1: Person(1, organization="Acme"), 2: Person(2, organization="Acme")},
        rules=Rules(different_organization=RuleLevel.PREFERRED),
    ),
    Case(
        "a required time zone keeps apart people of two zones",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}},
        {1: BELOW_THRESHOLD},
        people={1: Person(1, timezone="Europe/Berlin"), 2: Person(2, timezone="America/Lima")},
        rules=Rules(same_timezone=RuleLevel.REQUIRED),
    ),
    Case(
        "nobody is introduced to themselves",
        {1: [(1, L)]},
        {1: {1}},
        {1: BELOW_THRESHOLD},
    ),
    Case(
        "a pair chosen earlier in the plan is not chosen again the other way",
        {1: [(1, L)], 2: [(1, L)]},
        {1: {2}, 2: {1}},
        {1: 2, 2: BELOW_THRESHOLD},
    ),
    Case(
        "a pair chosen earlier counts against the cap of the rest of the plan",
        {1: [(1, L)], 2: [(1, L)], 3: [(1, L)]},
        {1: {3}, 2: {3}},
        {1: 3, 2: BELOW_THRESHOLD},
        people={3: Person(3, recent_intros=1)},
    ),
    Case(
        "the person chosen as a partner can still choose within the cap",
        {1: [(1, L)], 2: [(1, L)], 3: [(1, L)]},
        {1: {2}, 2: {3}},
        {1: 2, 2: 3},
    ),
    Case(
        "a person who reached the cap as a partner waits for their own turn",
        {1: [(1, L)], 2: [(1, L)], 3: [(1, L)]},
        {1: {2}, 2: {3}},
        {1: 2, 2: UNAVAILABLE},
        people={2: Person(2, recent_intros=1)},
    ),
    Case("no interests of one's own: nothing to score", {}, {1: {2}}, {1: BELOW_THRESHOLD}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_plan_pairs(case: Case) -> None:
    plan = plan_pairs(_view(case), LivePolicy(case.rules, case.min_score), NOW)
    outcomes: dict[int, int | str] = {p: c.partner_id for p, c in plan.pairs}
    outcomes |= dict(plan.skipped)
    assert outcomes == case.expected
    assert [p for p, _ in plan.pairs] == sorted(p for p, _ in plan.pairs)


def test_a_plan_explains_its_pairs() -> None:
    case = Case("", {1: [(3, S), (1, L)], 2: [(3, OF), (1, L)]}, {1: {2}}, {})
    ((person, choice),) = plan_pairs(_view(case), LivePolicy(Rules(), 0.5), NOW).pairs
    assert pair_members((person, choice)) == (1, 2)
    assert {(m.topic_id, m.relation, m.first_seeks) for m in choice.pair.topics} == {
        (1, TopicRelation.SHARED, None),
        (3, TopicRelation.SEEKS_OFFERS, True),
    }
    assert choice.pair.topics[0].topic_id == 1  # the rarer topic first


def test_nothing_to_plan() -> None:
    view = LiveView({}, {}, {}, STATS, 100, {})
    plan = plan_pairs(view, LivePolicy(Rules(), 0.5), NOW)
    assert plan.pairs == () and plan.skipped == ()


@pytest.mark.parametrize(
    ("name", "holders", "people", "expected"),
    [
        ("a handful sharing a rare topic meet as one group", {1: [3, 1, 2]}, {}, [(1, (1, 2, 3))]),
        ("two are not a group", {1: [1, 2]}, {}, []),
        ("more than the maximum are not one group", {1: [1, 2, 3, 4, 5]}, {}, []),
        (
            "no group when two of them already met",
            {1: [1, 2, 3]},
            {2: Person(2, met=frozenset({3}))},
            [],
        ),
        (
            "no group when one of them is at the cap",
            {1: [1, 2, 3]},
            {1: Person(1, recent_intros=2)},
            [],
        ),
        (
            "one group per person, topics in id order",
            {2: [1, 2, 3], 1: [3, 4, 5]},
            {},
            [(1, (3, 4, 5))],
        ),
    ],
)
def test_topic_groups(
    name: str, holders: dict[int, list[int]], people: dict[int, Person], expected: list[object]
) -> None:
    everyone = {m for ms in holders.values() for m in ms}
    known = {p: people.get(p, Person(p)) for p in everyone}
    assert topic_groups(holders, known, NOW, Rules(), 4) == expected, name


def test_a_group_needs_a_topic_worth_an_introduction_to_each_pair() -> None:
    groups = [(1, (1, 2, 3)), (2, (4, 5, 6))]
    assert worth_a_group(groups, STATS, 100, min_score=1.0) == [(1, (1, 2, 3))]
