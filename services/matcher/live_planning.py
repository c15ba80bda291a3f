"""Live matching's decisions: given the people with new topics, their candidates, everyone's
interests, the topics' statistics and what the rules know of each person, which partner each
person gets, and why the others get none. Plain Python, no I/O.

The use case around it (`service.py`) reads what this needs, then locks the chosen pairs'
contact rows and keeps those still within the cap (`availability.within_cap`), writes them and
counts the outcomes (`roac_matcher_match_attempts_total{outcome}`):

- `no_candidate`: nobody reachable holds any of the new topics (decided before reading more);
- `unavailable`: the person is opted out, snoozed or at a cap (the weekly, or their own);
- `below_threshold`: no candidate is allowed by the rules and scores `min_score` or more;
- `over_cap`: chosen, but under the row locks one of the two turned out unavailable;
- `proposed`: written (a group proposed by another transaction first is skipped silently).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, replace
from datetime import datetime

from services.matcher.availability import available
from services.matcher.constraints import Person, Rules, forbidden
from services.matcher.scoring import Choice, Interest, TopicStats, choose_partner, decayed

NO_CANDIDATE = "no_candidate"
UNAVAILABLE = "unavailable"
BELOW_THRESHOLD = "below_threshold"
OVER_CAP = "over_cap"
PROPOSED = "proposed"


@dataclass(frozen=True, slots=True)
class LiveView:
    """What live matching reads before it decides."""

    # Each person with new topics: the reachable people holding one of them.
    candidates: Mapping[int, Set[int]]
    # Each person's own interests (weights as declared; decayed here).
    own_interests: Mapping[int, Sequence[Interest]]
    # Each candidate's interests in the topics the people hold.
    their_interests: Mapping[int, Sequence[Interest]]
    stats: Mapping[int, TopicStats]
    population: int
    # What the rules know of every person and candidate.
    people: Mapping[int, Person]


@dataclass(frozen=True, slots=True)
class LivePolicy:
    rules: Rules
    min_score: float
    half_life_days: float = 365.0


@dataclass(frozen=True, slots=True)
class LivePlan:
    # (person, their chosen partner and why), in person order.
    pairs: tuple[tuple[int, Choice], ...]
    # (person, UNAVAILABLE or BELOW_THRESHOLD) for everyone else considered.
    skipped: tuple[tuple[int, str], ...]


def plan_pairs(view: LiveView, policy: LivePolicy, now: datetime) -> LivePlan:
    """For each person (lowest id first), the best partner the rules allow. A pair chosen
    earlier in the plan counts as met, and against both people's cap, for the ones after it,
    so one plan never introduces two people twice nor anyone beyond a cap (the operator's
    weekly one, or the person's own weekly or monthly one: `availability.may_take_another`)."""
    rules, half_life = policy.rules, policy.half_life_days
    people = dict(view.people)
    pairs: list[tuple[int, Choice]] = []
    skipped: list[tuple[int, str]] = []
    for person in sorted(view.candidates):
        me = people.get(person)
        if me is None or not available(me, now, rules):
            skipped.append((person, UNAVAILABLE))
            continue
        considered = view.candidates[person]
        excluded = {
            c
            for c in considered
            if c not in people
            or not available(people[c], now, rules)
            or forbidden(me, people[c], rules)
        }
        choice = choose_partner(
            decayed(view.own_interests.get(person, []), now, half_life),
            {c: decayed(view.their_interests.get(c, []), now, half_life) for c in considered},
            view.stats,
            view.population,
            excluded=excluded,
            min_score=policy.min_score,
        )
        if choice is None:
            skipped.append((person, BELOW_THRESHOLD))
            continue
        people[person] = _introduced(me, choice.partner_id)
        people[choice.partner_id] = _introduced(people[choice.partner_id], person)
        pairs.append((person, choice))
    return LivePlan(tuple(pairs), tuple(skipped))


def _introduced(person: Person, partner_id: int) -> Person:
    """The person once this plan introduced them to `partner_id`: met, and one more against
    each cap they have (the weekly one, and their own monthly one: as `within_cap` counts)."""
    return replace(
        person,
        met=person.met | {partner_id},
        recent_intros=person.recent_intros + 1,
        month_intros=person.month_intros + 1,
    )


def pair_members(pair: tuple[int, Choice]) -> tuple[int, int]:
    """The two people of a planned pair (for `availability.within_cap`)."""
    return pair[0], pair[1].partner_id
