"""How a match is scored and a partner chosen: plain Python, no I/O.

Score of a pair = the sum, over topics the two people have in a compatible way, of
    rarity(topic) x weight_a x weight_b
where rarity(topic) = ln(1 + population / people_with_topic), an inverse document frequency
(raised by `topic_boost` for topics whose introductions led to meetings), and each weight decays
with the interest's age (`decayed_weight`, half-life ROAC_MATCH_INTEREST_HALF_LIFE_DAYS):
a topic three people in a hundred share counts ln(1 + 100/3) = 3.5, one all hundred share counts
ln 2 = 0.69. Compatible means both like it, or one seeks what the other offers; two people who
both seek the same thing are not an answer to each other, nor are two who both offer it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime

from shared.events import InterestKind, TopicRelation


@dataclass(frozen=True, slots=True)
class Interest:
    topic_id: int
    kind: InterestKind
    weight: float
    declared_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TopicStats:
    name: str
    people: int
    # From feedback: topics whose introductions led to meetings count more (`topic_boost`).
    boost: float = 1.0


@dataclass(frozen=True, slots=True)
class TopicMatch:
    topic_id: int
    relation: TopicRelation
    # For SEEKS_OFFERS: True when the first person of the pair is the one who seeks.
    first_seeks: bool | None
    contribution: float


@dataclass(frozen=True, slots=True)
class PairScore:
    score: float
    topics: tuple[TopicMatch, ...]  # strongest first


@dataclass(frozen=True, slots=True)
class Choice:
    partner_id: int
    pair: PairScore


def rarity(people_with_topic: int, population: int) -> float:
    return math.log1p(max(population, 1) / max(people_with_topic, 1))


def topic_value(stats: TopicStats, population: int) -> float:
    """What sharing this topic is worth: its rarity, raised by meetings it led to."""
    return rarity(stats.people, population) * stats.boost


def topic_boost(meetings: int) -> float:
    """1.0 for a topic no introduction led to a meeting yet, +5 % per meeting, at most 2.0."""
    return 1.0 + 0.05 * min(max(meetings, 0), 20)


def topic_stats(counts: Mapping[int, tuple[str, int, int]]) -> dict[int, TopicStats]:
    """What scoring weighs of each topic, from its stored (name, people, meetings)."""
    return {
        t: TopicStats(name, people, topic_boost(meetings))
        for t, (name, people, meetings) in counts.items()
    }


def decayed_weight(
    weight: float, declared_at: datetime, now: datetime, half_life_days: float
) -> float:
    """An interest counts less as it ages: half its weight after `half_life_days`. Age counts
    in whole days, so interests declared the same day weigh the same (ties stay ties)."""
    age_days = max((now - declared_at).days, 0)
    return float(weight * 0.5 ** (age_days / half_life_days))


def decayed(interests: Iterable[Interest], now: datetime, half_life_days: float) -> list[Interest]:
    """The interests with their weights decayed to `now` (undated ones unchanged)."""
    found = []
    for i in interests:
        # Interests from today keep their weight: reuse them (a round decays millions).
        if i.declared_at is None or (now - i.declared_at).days <= 0:
            found.append(i)
        else:
            weight = decayed_weight(i.weight, i.declared_at, now, half_life_days)
            found.append(Interest(i.topic_id, i.kind, weight))  # undated: decayed once
    return found


COMPATIBLE_KINDS = frozenset(
    {
        (InterestKind.LIKES, InterestKind.LIKES),
        (InterestKind.SEEKS, InterestKind.OFFERS),
        (InterestKind.OFFERS, InterestKind.SEEKS),
    }
)


def _relation(
    first: InterestKind, second: InterestKind
) -> tuple[TopicRelation, bool | None] | None:
    if first is InterestKind.LIKES and second is InterestKind.LIKES:
        return TopicRelation.SHARED, None
    if first is InterestKind.SEEKS and second is InterestKind.OFFERS:
        return TopicRelation.SEEKS_OFFERS, True
    if first is InterestKind.OFFERS and second is InterestKind.SEEKS:
        return TopicRelation.SEEKS_OFFERS, False
    return None


def score_pair(
    first: Iterable[Interest],
    second: Iterable[Interest],
    topics: Mapping[int, TopicStats],
    population: int,
) -> PairScore | None:
    """Score two people's interests; None when they have nothing compatible."""
    by_topic: dict[int, list[Interest]] = {}
    for interest in second:
        by_topic.setdefault(interest.topic_id, []).append(interest)
    best: dict[int, TopicMatch] = {}
    for mine in first:
        for theirs in by_topic.get(mine.topic_id, ()):
            relation = _relation(mine.kind, theirs.kind)
            if relation is None:
                continue
            contribution = topic_value(topics[mine.topic_id], population) * (
                mine.weight * theirs.weight
            )
            current = best.get(mine.topic_id)
            if current is None or contribution > current.contribution:
                best[mine.topic_id] = TopicMatch(
                    mine.topic_id, relation[0], relation[1], contribution
                )
    if not best:
        return None
    ordered = tuple(sorted(best.values(), key=lambda m: (-m.contribution, m.topic_id)))
    return PairScore(sum(m.contribution for m in ordered), ordered)


def choose_partner(
    person: Iterable[Interest],
    candidates: Mapping[int, Iterable[Interest]],
    topics: Mapping[int, TopicStats],
    population: int,
    *,
    excluded: Set[int],
    min_score: float,
) -> Choice | None:
    """The highest-scoring candidate not excluded and at or above `min_score` (ties: lowest id).

    This runs for every candidate of every person, so it computes bare scores with the person's
    interests indexed once; the full `PairScore` (with its explanation) is built for the winner.
    """
    mine = list(person)
    by_topic: dict[int, list[Interest]] = {}
    for interest in mine:
        by_topic.setdefault(interest.topic_id, []).append(interest)
    rarities = {t: topic_value(topics[t], population) for t in by_topic}
    best_id, best_score = -1, -1.0
    for candidate_id in sorted(candidates):
        if candidate_id in excluded:
            continue
        per_topic: dict[int, float] = {}
        for theirs in candidates[candidate_id]:
            for own in by_topic.get(theirs.topic_id, ()):
                if (own.kind, theirs.kind) in COMPATIBLE_KINDS:
                    value = rarities[theirs.topic_id] * own.weight * theirs.weight
                    if value > per_topic.get(theirs.topic_id, 0.0):
                        per_topic[theirs.topic_id] = value
        score = sum(per_topic.values())
        if per_topic and score >= min_score and score > best_score:
            best_id, best_score = candidate_id, score
    if best_id < 0:
        return None
    pair = score_pair(mine, candidates[best_id], topics, population)
    assert pair is not None
    return Choice(best_id, pair)


def pair_key(*contact_ids: int) -> str:
    """The identity of a group regardless of order: "never the same pair twice" is keyed on it."""
    return ":".join(str(i) for i in sorted(set(contact_ids)))


def explain(pair: PairScore, topics: Mapping[int, TopicStats], group_size: int = 2) -> str:
    """One sentence saying why these people should meet, for the proposal and its readers."""
    shared = [topics[m.topic_id].name for m in pair.topics if m.relation is TopicRelation.SHARED]
    helping = [
        topics[m.topic_id].name for m in pair.topics if m.relation is TopicRelation.SEEKS_OFFERS
    ]
    parts = []
    if shared:
        parts.append(f"{'both' if group_size == 2 else 'all'} care about {_join(shared)}")
    if helping:
        other = "the other offers it" if group_size == 2 else "another offers it"
        parts.append(f"one is looking for help with {_join(helping)} and {other}")
    return "You " + " and ".join(parts) + "." if shared else _capitalise(" and ".join(parts)) + "."


def _join(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]
