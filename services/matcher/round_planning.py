"""Planning a round: who meets whom, and why. Plain Python, no I/O.

A round covers every available person of a pool at once ("daily acts of connection"):

1. people who are paused (snoozed), opted out, unreachable or at the weekly cap sit this round
   out, each listed among those left out with the reason (`unavailable_reason`);
2. a sparse candidate graph (`candidate_graph`): each person's best `top_k` partners through
   the topics they hold, without pairs the rules forbid;
3. edge weights are the pair score, times the penalty of any broken *preferred* rule, times the
   waiting bonus of the two people (whoever waited longest is placed first);
4. `assignment.assign` groups people on that graph (a near-optimal weighted matching for pairs;
   an odd person joins a pair as a third), with `serendipity` and the round's seed;
5. every group gets its explanation (the topics and the reason), every person not placed a reason.

`RoundPlan.unplaced` lists everyone left out: first the eligible people no group took, then
those who sat the round out. The statistics keep them apart: `unplaced` counts the eligible
people not placed (so `coverage` is placed / eligible), `unavailable` those who sat out (by
reason in `unavailable_reasons`), and `left_out` both.

The same inputs and seed give the same plan, so a round can be replayed (dry run) exactly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from typing import Any

from services.matcher.assignment import assign
from services.matcher.availability import available, snoozed
from services.matcher.candidate_graph import build_candidate_graph
from services.matcher.constraints import (
    Person,
    Rules,
    forbidden,
    preference_factor,
    waiting_bonus,
)
from services.matcher.scoring import (
    Interest,
    PairScore,
    TopicMatch,
    TopicStats,
    explain,
    score_pair,
)
from shared.events import TopicRelation

NO_INTERESTS = "has declared no interests"
NO_PARTNER = "nobody available in the pool shares an interest with them under the rules"
ALL_TAKEN = "every compatible partner was placed in another group"
# Why someone sat the round out (the pause names its end: "paused until 2027-01-04").
OPTED_OUT = "opted out"
NO_CHANNEL = "has no channel to be reached on"
PAUSED = "paused"
CAP_REACHED = "weekly cap reached"


@dataclass(frozen=True, slots=True)
class RoundParams:
    group_size: int
    serendipity: float
    seed: int
    top_k: int
    per_topic: int


@dataclass(frozen=True, slots=True)
class GroupTopic:
    topic: str
    relation: TopicRelation
    seeker: int | None = None
    offerer: int | None = None


@dataclass(frozen=True, slots=True)
class PlannedGroup:
    members: tuple[int, ...]
    score: float
    topics: tuple[GroupTopic, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class RoundPlan:
    groups: tuple[PlannedGroup, ...]
    unplaced: tuple[tuple[int, str], ...]  # (contact id, reason)
    stats: dict[str, Any]


def unavailable_reason(person: Person, now: datetime) -> str:
    """Why a person `availability.available` turned away sits this round out: opted out, no
    channel, paused (until the pause's end, as a date in UTC), else the weekly cap (theirs or
    the operator's) is reached."""
    if person.opted_out:
        return OPTED_OUT
    if not person.deliverable:
        return NO_CHANNEL
    if person.snoozed_until is not None and snoozed(person.snoozed_until, now):
        return f"{PAUSED} until {person.snoozed_until.date().isoformat()}"
    return CAP_REACHED


def _reason_kind(reason: str) -> str:
    """The statistics' key of a sit-out reason (a pause without its date)."""
    return PAUSED if reason.startswith(PAUSED) else reason


def plan_round(
    people: Mapping[int, Person],
    interests: Mapping[int, Sequence[Interest]],
    topics: Mapping[int, TopicStats],
    population: int,
    last_introduced: Mapping[int, datetime | None],
    rules: Rules,
    params: RoundParams,
    now: datetime,
) -> RoundPlan:
    """Plan a round over `people` (the pool's members, those who cannot take an introduction
    now included: they are listed as left out with the reason); weights already decayed."""
    clock = time.perf_counter()
    ready: list[int] = []
    sitting_out: list[tuple[int, str]] = []
    for p in sorted(people):
        if available(people[p], now, rules):
            ready.append(p)
        else:
            sitting_out.append((p, unavailable_reason(people[p], now)))
    with_interests = [p for p in ready if interests.get(p)]

    def excluded(a: int, b: int) -> bool:
        return forbidden(people[a], people[b], rules)

    graph = build_candidate_graph(
        {p: interests[p] for p in with_interests},
        topics,
        population,
        top_k=params.top_k,
        per_topic=params.per_topic,
        seed=params.seed,
        excluded=excluded,
    )
    graph_seconds = time.perf_counter() - clock
    bonus = {p: waiting_bonus(last_introduced.get(p), now) for p in with_interests}
    weighted = [
        (a, b, score * preference_factor(people[a], people[b], rules) * (bonus[a] + bonus[b]) / 2)
        for (a, b), score in graph.items()
    ]
    assignment = assign(
        with_interests,
        weighted,
        group_size=params.group_size,
        serendipity=params.serendipity,
        seed=params.seed,
        forbidden=excluded,
        priority=bonus,
    )
    assign_seconds = time.perf_counter() - clock - graph_seconds
    groups = tuple(
        _explained(members, interests, topics, population) for members in assignment.groups
    )
    connected = {p for edge in graph for p in edge}
    not_placed = [(p, NO_INTERESTS) for p in ready if not interests.get(p)] + [
        (p, ALL_TAKEN if p in connected else NO_PARTNER) for p in assignment.unplaced
    ]
    unplaced = tuple(not_placed + sitting_out)
    by_reason: dict[str, int] = {}
    for _, why in sitting_out:
        by_reason[_reason_kind(why)] = by_reason.get(_reason_kind(why), 0) + 1
    placed = sum(len(g.members) for g in groups)
    sizes: dict[str, int] = {}
    for group in groups:
        sizes[str(len(group.members))] = sizes.get(str(len(group.members)), 0) + 1
    total = sum(g.score for g in groups)
    stats: dict[str, Any] = {
        "pool_members": len(people),
        "unavailable": len(sitting_out),
        "unavailable_reasons": by_reason,
        "eligible": len(ready),
        "candidate_edges": len(graph),
        "groups": len(groups),
        "group_sizes": sizes,
        "placed": placed,
        "unplaced": len(not_placed),
        "left_out": len(unplaced),
        "coverage": round(placed / len(ready), 4) if ready else 1.0,
        "total_score": round(total, 4),
        "mean_group_score": round(total / len(groups), 4) if groups else 0.0,
        "plan_seconds": {
            "graph": round(graph_seconds, 3),
            "assignment": round(assign_seconds, 3),
            "explanations": round(time.perf_counter() - clock - graph_seconds - assign_seconds, 3),
        },
    }
    return RoundPlan(groups, unplaced, stats)


def _explained(
    members: tuple[int, ...],
    interests: Mapping[int, Sequence[Interest]],
    topics: Mapping[int, TopicStats],
    population: int,
) -> PlannedGroup:
    """A group's score (the sum over its pairs) and what its members have in common."""
    total = 0.0
    best: dict[int, tuple[TopicMatch, GroupTopic]] = {}
    for a, b in combinations(members, 2):
        pair = score_pair(interests.get(a, ()), interests.get(b, ()), topics, population)
        if pair is None:
            continue
        total += pair.score
        for match in pair.topics:
            seeker = offerer = None
            if match.relation is TopicRelation.SEEKS_OFFERS:
                seeker, offerer = (a, b) if match.first_seeks else (b, a)
            entry = GroupTopic(topics[match.topic_id].name, match.relation, seeker, offerer)
            if (
                match.topic_id not in best
                or match.contribution > best[match.topic_id][0].contribution
            ):
                best[match.topic_id] = (match, entry)
    ordered = sorted(best.values(), key=lambda me: (-me[0].contribution, me[0].topic_id))
    merged = PairScore(total, tuple(match for match, _ in ordered))
    reason = (
        explain(merged, topics, group_size=len(members)) if ordered else "You were placed together."
    )
    return PlannedGroup(members, total, tuple(entry for _, entry in ordered), reason)
