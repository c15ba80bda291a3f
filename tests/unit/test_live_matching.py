"""Live matching end to end through its use case (`service.LiveMatching`), on an in-memory fake
of the store slices it uses (tests/unit/fakes_matcher.py): declared interests in, proposals and
their `intro.proposed.v1` events out, with the outcome each person looked for is counted under
(`roac_matcher_match_attempts_total`). The branches tests/integration/test_matcher_service.py
and test_matcher_constraints.py cover against PostgreSQL, and the edge cases they don't."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from services.matcher.constraints import Rules
from services.matcher.service import LiveMatching, MatchingPolicy
from shared.events import InterestData, InterestDeclared, InterestKind, TopicRelation
from tests.unit.fakes_matcher import SOURCE, FakeLiveWork, MatcherWorld

POLICY = MatchingPolicy(min_score=0.5, candidates_per_topic=50)
COOLDOWN = MatchingPolicy(min_score=0.5, candidates_per_topic=50, cooldown_days=30)
# Groups below three are never formed: this turns them off.
NO_GROUPS = MatchingPolicy(min_score=0.5, candidates_per_topic=50, group_max=2)
LIKES, SEEKS, OFFERS = InterestKind.LIKES, InterestKind.SEEKS, InterestKind.OFFERS
OUTCOMES = ("proposed", "no_candidate", "unavailable", "below_threshold", "over_cap")


def declared(
    i: int,
    topic: str,
    kind: InterestKind = LIKES,
    *,
    bulk: bool = False,
    at: datetime | None = None,
) -> InterestDeclared:
    return InterestDeclared(
        source="ingest",
        correlation_id=f"c-{i}",
        occurred_at=at or datetime.now(UTC),
        bulk=bulk,
        data=InterestData(source=SOURCE, external_id=f"p{i}", topic=topic, kind=kind),
    )


def people(*ids: int) -> Callable[[MatcherWorld], None]:
    def arrange(world: MatcherWorld) -> None:
        for i in ids:
            world.person(i)

    return arrange


def _outcomes() -> dict[str, float]:
    return {
        o: REGISTRY.get_sample_value("roac_matcher_match_attempts_total", {"outcome": o}) or 0.0
        for o in OUTCOMES
    }


async def run(
    world: MatcherWorld, events: list[InterestDeclared], policy: MatchingPolicy = POLICY
) -> dict[str, float]:
    """Declare the events in one unit of work; return the outcomes counted meanwhile."""
    before = _outcomes()
    await LiveMatching(policy).declare_interests(FakeLiveWork(world), events)
    after = _outcomes()
    return {o: after[o] - before[o] for o in OUTCOMES if after[o] != before[o]}


@dataclass(frozen=True)
class Case:
    id: str
    # The people (0..5 unless said otherwise) and what earlier events left behind.
    arrange: Callable[[MatcherWorld], None]
    # Declared in one message.
    events: list[InterestDeclared]
    introduced: list[tuple[str, ...]]
    outcomes: dict[str, float] = field(default_factory=dict)
    policy: MatchingPolicy = POLICY


def _with(
    *steps: Callable[[MatcherWorld], object], size: int = 6
) -> Callable[[MatcherWorld], None]:
    """People 0..size-1, then each step (what earlier events left behind)."""

    def arrange(world: MatcherWorld) -> None:
        for i in range(size):
            world.person(i)
        for step in steps:
            step(world)

    return arrange


SOON = datetime.now(UTC) + timedelta(days=3)
PAST = datetime.now(UTC) - timedelta(days=1)

CASES = [
    Case(
        "a new interest finds its partner",
        _with(lambda w: w.holds(1, "kites")),
        [declared(0, "kites")],
        [("p0", "p1")],
        {"proposed": 1},
    ),
    Case(
        "two newcomers in one message meet once",
        _with(),
        [declared(0, "kites"), declared(1, "kites")],
        [("p0", "p1")],
        {"proposed": 1, "below_threshold": 1},
    ),
    Case(
        "nobody holds the topic",
        _with(),
        [declared(0, "solo")],
        [],
        {"no_candidate": 1},
    ),
    Case(
        "nobody scores the threshold",
        _with(lambda w: w.holds(1, "kites")),
        [declared(0, "kites")],
        [],
        {"below_threshold": 1},
        MatchingPolicy(min_score=50.0, candidates_per_topic=50),
    ),
    Case(
        "of several candidates the one sharing the rarer topic wins",
        _with(
            *(lambda w, i=i: w.holds(i, "common") for i in range(1, 7)),
            lambda w: w.holds(7, "rare"),
            size=8,
        ),
        [declared(0, "common"), declared(0, "rare")],
        [("p0", "p7")],
        {"proposed": 1},
    ),
    Case(
        "of several candidates the one sharing more topics wins",
        _with(
            lambda w: w.holds(1, "kites"),
            lambda w: w.holds(2, "kites"),
            lambda w: w.holds(2, "moss"),
        ),
        [declared(0, "kites"), declared(0, "moss")],
        [("p0", "p2")],
        {"proposed": 1},
        NO_GROUPS,
    ),
    Case(
        "the declarer at the weekly cap is unavailable",
        _with(
            lambda w: w.holds(1, "kites"), lambda w: w.proposed(0, 4), lambda w: w.proposed(0, 5)
        ),
        [declared(0, "kites")],
        [],
        {"unavailable": 1},
    ),
    Case(
        "a partner at the weekly cap is left out",
        _with(
            lambda w: w.holds(1, "kites"), lambda w: w.proposed(1, 4), lambda w: w.proposed(1, 5)
        ),
        [declared(0, "kites")],
        [],
        {"below_threshold": 1},
    ),
    Case(
        "introductions older than a week do not count against the cap",
        _with(
            lambda w: w.holds(1, "kites"),
            lambda w: w.proposed(0, 4, days_ago=8),
            lambda w: w.proposed(0, 5, days_ago=8),
        ),
        [declared(0, "kites")],
        [("p0", "p1")],
        {"proposed": 1},
    ),
    Case(
        "another matcher took the last slot meanwhile: over the cap under the lock",
        _with(lambda w: w.holds(1, "kites"), lambda w: w.committed_elsewhere.update({1: 2})),
        [declared(0, "kites")],
        [],
        {"over_cap": 1},
    ),
    Case(
        "a partner at their own weekly cap of 0 is left out",
        _with(
            lambda w: w.holds(1, "kites"), lambda w: setattr(w.contacts[1], "own_cap_per_week", 0)
        ),
        [declared(0, "kites")],
        [],
        {"below_threshold": 1},
    ),
    Case(
        "the best partner is at their own weekly cap: the free second best gets the introduction",
        _with(
            lambda w: w.holds(1, "kites"),
            lambda w: w.holds(2, "kites"),
            lambda w: w.holds(2, "moss"),
            lambda w: setattr(w.contacts[2], "own_cap_per_week", 1),
            lambda w: w.proposed(2, 4),
        ),
        [declared(0, "kites"), declared(0, "moss")],
        [("p0", "p1")],
        {"proposed": 1},
        NO_GROUPS,
    ),
    Case(
        "the best partner is at their own monthly cap: the free second best gets the introduction",
        _with(
            lambda w: w.holds(1, "kites"),
            lambda w: w.holds(2, "kites"),
            lambda w: w.holds(2, "moss"),
            lambda w: setattr(w.contacts[2], "own_cap_per_month", 1),
            lambda w: w.proposed(2, 4, days_ago=10),
        ),
        [declared(0, "kites"), declared(0, "moss")],
        [("p0", "p1")],
        {"proposed": 1},
        NO_GROUPS,
    ),
    Case(
        "one message's first introduction counts against a partner's own monthly cap",
        _with(
            lambda w: w.holds(1, "kites"),
            lambda w: w.holds(1, "moss"),
            lambda w: setattr(w.contacts[1], "own_cap_per_month", 1),
        ),
        [declared(0, "kites"), declared(2, "moss")],
        [("p0", "p1")],
        {"proposed": 1, "below_threshold": 1},
        NO_GROUPS,
    ),
    Case(
        "another matcher used a partner's own monthly slot meanwhile: over it under the lock",
        _with(
            lambda w: w.holds(1, "kites"),
            lambda w: setattr(w.contacts[1], "own_cap_per_month", 1),
            lambda w: w.committed_elsewhere.update({1: 1}),
        ),
        [declared(0, "kites")],
        [],
        {"over_cap": 1},
    ),
    Case(
        "a snoozed (paused) declarer waits",
        _with(
            lambda w: w.holds(1, "kites"), lambda w: setattr(w.contacts[0], "snoozed_until", SOON)
        ),
        [declared(0, "kites")],
        [],
        {"unavailable": 1},
    ),
    Case(
        "a snoozed partner is left out",
        _with(
            lambda w: w.holds(1, "kites"), lambda w: setattr(w.contacts[1], "snoozed_until", SOON)
        ),
        [declared(0, "kites")],
        [],
        {"below_threshold": 1},
    ),
    Case(
        "an expired snooze does not hold anyone back",
        _with(
            lambda w: w.holds(1, "kites"), lambda w: setattr(w.contacts[1], "snoozed_until", PAST)
        ),
        [declared(0, "kites")],
        [("p0", "p1")],
        {"proposed": 1},
    ),
    Case(
        "an opted-out holder is no candidate",
        _with(lambda w: w.holds(1, "kites"), lambda w: setattr(w.contacts[1], "opted_out", True)),
        [declared(0, "kites")],
        [],
        {"no_candidate": 1},
    ),
    Case(
        "an opted-out declarer is not looked for at all",
        _with(lambda w: w.holds(1, "kites"), lambda w: setattr(w.contacts[0], "opted_out", True)),
        [declared(0, "kites")],
        [],
    ),
    Case(
        "a declarer without an address is not looked for yet",
        _with(lambda w: w.holds(1, "kites"), lambda w: setattr(w.contacts[0], "email", None)),
        [declared(0, "kites")],
        [],
    ),
    Case(
        "a block by the declarer",
        _with(lambda w: w.holds(1, "kites"), lambda w: w.contacts[0].blocks.add(1)),
        [declared(0, "kites")],
        [],
        {"below_threshold": 1},
    ),
    Case(
        "a block by the partner",
        _with(lambda w: w.holds(1, "kites"), lambda w: w.contacts[1].blocks.add(0)),
        [declared(0, "kites")],
        [],
        {"below_threshold": 1},
    ),
    Case(
        "colleagues are not introduced",
        _with(
            lambda w: w.holds(1, "kites"),
            lambda w: setattr(w.contacts[0], "organization", "Acme"),
            lambda w: setattr(w.contacts[1], "organization", " acme "),
        ),
        [declared(0, "kites")],
        [],
        {"below_threshold": 1},
    ),
    Case(
        "unless the rule is off",
        _with(
            lambda w: w.holds(1, "kites"),
            lambda w: setattr(w.contacts[0], "organization", "Acme"),
            lambda w: setattr(w.contacts[1], "organization", "Acme"),
        ),
        [declared(0, "kites")],
        [("p0", "p1")],
        {"proposed": 1},
        MatchingPolicy(
            min_score=0.5,
            candidates_per_topic=50,
            rules=Rules.from_mapping(2, {"different_organization": "off"}),
        ),
    ),
    Case(
        "a pair already proposed is never proposed again (no cooldown)",
        _with(lambda w: w.holds(1, "kites"), lambda w: w.proposed(0, 1, days_ago=400)),
        [declared(0, "kites")],
        [],
        {"below_threshold": 1},
    ),
    Case(
        "a pair proposed within the cooldown waits",
        _with(lambda w: w.holds(1, "kites"), lambda w: w.proposed(0, 1, days_ago=10)),
        [declared(0, "kites")],
        [],
        {"below_threshold": 1},
        COOLDOWN,
    ),
    Case(
        "a pair proposed before the cooldown may meet again",
        _with(lambda w: w.holds(1, "kites"), lambda w: w.proposed(0, 1, days_ago=40)),
        [declared(0, "kites")],
        [("p0", "p1")],
        {"proposed": 1},
        COOLDOWN,
    ),
    Case(
        "a declined pair never again, cooldown or not",
        _with(
            lambda w: w.holds(1, "kites"), lambda w: w.proposed(0, 1, days_ago=90, declined=True)
        ),
        [declared(0, "kites")],
        [],
        {"below_threshold": 1},
        COOLDOWN,
    ),
    Case(
        "seekers never meet each other",
        _with(lambda w: w.holds(1, "compliance", SEEKS)),
        [declared(0, "compliance", SEEKS)],
        [],
        {"below_threshold": 1},
    ),
    Case(
        "a seeker meets an offerer",
        _with(lambda w: w.holds(1, "compliance", SEEKS)),
        [declared(2, "compliance", OFFERS)],
        [("p2", "p1")],
        {"proposed": 1},
    ),
    Case(
        "a handful declaring a rare topic at once meet as one group",
        _with(),
        [declared(i, "lichens") for i in range(4)],
        [("p0", "p1", "p2", "p3")],
    ),
    Case(
        "no group when two of them met: pairs instead",
        _with(lambda w: w.proposed(0, 1)),
        [declared(i, "moss") for i in range(3)],
        # Person 2 meets both (two introductions: the weekly cap) and nobody is left for them.
        [("p0", "p2"), ("p1", "p2")],
        {"proposed": 2, "unavailable": 1},
    ),
    Case(
        "a fifth holder of a group's topic gets a pair",
        _with(
            *(lambda w, i=i: w.holds(i, "lichens") for i in range(4)),
            lambda w: w.proposed(0, 1, 2, 3),
        ),
        [declared(4, "lichens")],
        [("p4", "p0")],
        {"proposed": 1},
    ),
    Case(
        "no group of opted-out or unreachable holders",
        _with(lambda w: setattr(w.contacts[2], "opted_out", True)),
        [declared(i, "lichens") for i in range(3)],
        [("p0", "p1")],
        {"proposed": 1, "below_threshold": 1},
    ),
    Case(
        "a bulk import's interests are stored, nobody is introduced",
        _with(lambda w: w.holds(1, "kites")),
        [declared(0, "kites", bulk=True)],
        [],
    ),
    Case(
        "a declaration older than its withdrawal brings nothing back",
        _with(
            lambda w: w.holds(1, "kites"),
            lambda w: w.withdrawals.update({(1000, "kites", LIKES): datetime.now(UTC)}),
        ),
        [declared(0, "kites", at=datetime.now(UTC) - timedelta(hours=1))],
        [],
    ),
    Case(
        "an unknown person's interest waits for their contact details",
        _with(lambda w: w.holds(1, "kites")),
        [declared(9, "kites")],
        [],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_live_matching(case: Case) -> None:
    world = MatcherWorld()
    case.arrange(world)
    outcomes = await run(world, case.events, case.policy)
    assert world.introduced() == case.introduced
    assert outcomes == case.outcomes


async def test_the_event_says_who_why_and_what_caused_it() -> None:
    world = MatcherWorld()
    _with(lambda w: w.holds(1, "compliance", OFFERS))(world)
    cause = declared(0, "compliance", SEEKS)
    await run(world, [cause])
    [event] = world.intros()
    assert (event.correlation_id, event.causation_id) == ("c-0", cause.message_id)
    [topic] = event.data.topics
    assert topic.relation is TopicRelation.SEEKS_OFFERS
    assert (
        topic.seeker and topic.seeker.external_id,
        topic.offerer and topic.offerer.external_id,
    ) == (
        "p0",
        "p1",
    )
    assert {c.address for p in event.data.participants for c in p.channels} == {
        "p0@example.org",
        "p1@example.org",
    }
    # The stored proposal is the event's, under the pair's key.
    [stored] = world.proposals
    assert (stored.row.id, stored.row.group_key) == (event.data.proposal_id, "0:1")


async def test_a_group_event_explains_the_rare_topic() -> None:
    world = MatcherWorld()
    _with()(world)
    await run(world, [declared(i, "lichens") for i in range(3)])
    [event] = world.intros()
    assert event.data.reason == "You all care about lichens, and nobody else here does yet."


async def test_topics_are_locked_before_candidates_and_the_pair_before_writing() -> None:
    world = MatcherWorld()
    _with(lambda w: w.holds(1, "kites"))(world)
    await run(world, [declared(0, "kites")])
    assert world.locked_topics == [{world.topic_ids["kites"]}]
    assert world.locked_contacts == [{0, 1}]


async def test_a_redeclared_interest_counts_its_holder_once() -> None:
    world = MatcherWorld()
    _with(lambda w: w.holds(1, "kites"))(world)
    await run(world, [declared(0, "kites")])
    await run(world, [declared(0, "kites", OFFERS)])
    assert world.topics[world.topic_ids["kites"]].people == 2
    assert world.introduced() == [("p0", "p1")]


async def test_a_person_becoming_reachable_meets_who_shares_their_earlier_interests() -> None:
    world = MatcherWorld()
    _with(lambda w: w.holds(0, "kites"), lambda w: w.holds(1, "kites"))(world)
    world.contacts[1].email = None
    await run(world, [declared(1, "moss")])
    assert world.introduced() == []
    world.contacts[1].email = "p1@example.org"
    cause = declared(1, "contact details")
    await LiveMatching(POLICY).match_reachable(FakeLiveWork(world), {1}, {1: cause})
    assert world.introduced() == [("p1", "p0")]
    assert world.intros()[0].causation_id == cause.message_id


async def test_the_cap_counts_what_one_message_already_proposed() -> None:
    """Person 0 shares a different topic with each of four people, declared in four messages:
    the weekly cap (2) stops the third."""
    world = MatcherWorld()
    _with(*(lambda w, i=i: w.holds(i, f"topic {i}") for i in range(1, 5)))(world)
    for i in range(1, 5):
        await run(world, [declared(0, f"topic {i}")])
    assert world.introduced() == [("p0", "p1"), ("p0", "p2")]
