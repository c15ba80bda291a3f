"""The sparse candidate graph a round assigns on: each person's best few partners, found through
the topics they hold, never by comparing all pairs. Plain Python, no I/O.

For each person, every rare topic they hold (at most `per_topic` holders) proposes all its
holders of a compatible kind, with their exact contribution to the pair score. Popular topics
propose a window of `per_topic` holders from a seeded random offset, and only when they could
matter: when the rare topics found too few candidates, or when a newcomer sharing only popular
topics could still outscore the shortlist. The best `1.5 x top_k` candidates that no rule
excludes are scored exactly (`scoring` rules: rarity, weights, compatible kinds, the best kind
combination per topic), and the best `top_k` become edges; the union of everyone's top-k makes
the graph symmetric. Cost: O(people x topics per person x per_topic), linear in the pool.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter

from services.matcher.scoring import Interest, TopicStats, topic_value
from shared.events import InterestKind

Edge = tuple[int, int]
_PARTNER_KINDS = {
    InterestKind.LIKES: (InterestKind.LIKES,),
    InterestKind.SEEKS: (InterestKind.OFFERS,),
    InterestKind.OFFERS: (InterestKind.SEEKS,),
}


def build_candidate_graph(
    interests: Mapping[int, Sequence[Interest]],
    topics: Mapping[int, TopicStats],
    population: int,
    *,
    top_k: int,
    per_topic: int,
    seed: int,
    excluded: Callable[[int, int], bool] | None = None,
) -> dict[Edge, float]:
    """Edges (low id, high id) -> exact pair score, for everyone in `interests`, without the
    pairs `excluded` rules out (checked on each person's shortlist only: cheap)."""
    rng = random.Random(seed)
    people = sorted(interests)
    # (topic, kind) -> {person: weight}, persons in id order; the largest weight if repeated.
    weight_of: dict[tuple[int, InterestKind], dict[int, float]] = {}
    held: dict[int, dict[int, list[tuple[InterestKind, float]]]] = {}
    for person in people:
        mine: dict[int, list[tuple[InterestKind, float]]] = {}
        for interest in sorted(interests[person], key=lambda i: (i.topic_id, i.kind.value)):
            weights = weight_of.setdefault((interest.topic_id, interest.kind), {})
            if interest.weight > weights.get(person, 0.0):
                weights[person] = interest.weight
            mine.setdefault(interest.topic_id, []).append((interest.kind, interest.weight))
        held[person] = mine
    listed = {key: (list(w), list(w.values())) for key, w in weight_of.items()}
    heaviest = {key: max(w.values()) for key, w in weight_of.items()}
    holders: dict[int, int] = {}
    for topic_id, _kind in weight_of:
        holders[topic_id] = holders.get(topic_id, 0) + len(weight_of[(topic_id, _kind)])
    values = {t: topic_value(topics[t], population) for t in holders}
    shortlist_size = top_k + (top_k + 1) // 2

    def add(
        rough: dict[int, float], topic_id: int, mine: list[tuple[InterestKind, float]], window: bool
    ) -> None:
        value = values[topic_id]
        for kind, weight in mine:
            base = value * weight
            for partner_kind in _PARTNER_KINDS[kind]:
                entry = listed.get((topic_id, partner_kind))
                if entry is None:
                    continue
                ids, weights = entry
                if window and len(ids) > per_topic:
                    # A window from a random offset (wrapping): one draw instead of per_topic,
                    # and as fair, since holders are in id order, not by popularity.
                    start = rng.randrange(len(ids))
                    stop = start + per_topic
                    ids = ids[start:stop] + ids[: max(0, stop - len(ids))]
                    weights = weights[start:stop] + weights[: max(0, stop - len(weights))]
                get = rough.get
                for other, other_weight in zip(ids, weights, strict=True):
                    rough[other] = get(other, 0.0) + base * other_weight

    edges: dict[Edge, float] = {}
    for person in people:
        mine = held[person]
        rough: dict[int, float] = {}
        popular = []
        for topic_id, kinds in mine.items():
            if holders[topic_id] > per_topic:
                popular.append(topic_id)
            else:
                add(rough, topic_id, kinds, window=False)
        rough.pop(person, None)
        # With one kind per topic, the rare topics' sums are exact: only popular topics need
        # adding per candidate. Holding a topic under two kinds could count it twice.
        rare = dict(rough) if all(len(k) == 1 for k in mine.values()) else None
        if popular:
            needed = len(rough) < shortlist_size
            if not needed:
                # What a newcomer sharing only popular topics could score at most.
                bound = sum(
                    values[t] * weight * heaviest.get((t, partner_kind), 0.0)
                    for t in popular
                    for kind, weight in mine[t]
                    for partner_kind in _PARTNER_KINDS[kind]
                )
                needed = bound > sorted(rough.values(), reverse=True)[shortlist_size - 1]
            if needed:
                for topic_id in popular:
                    add(rough, topic_id, mine[topic_id], window=True)
                rough.pop(person, None)
        if not rough:
            continue
        # Stable sort on the score: ties keep their (deterministic) order of discovery.
        shortlist = []
        for other, _ in sorted(rough.items(), key=itemgetter(1), reverse=True):
            if excluded is None or not excluded(person, other):
                shortlist.append(other)
                if len(shortlist) == shortlist_size:
                    break
        if rare is None:
            exact = [(_exact(mine, other, values, weight_of), other) for other in shortlist]
        else:
            exact = [
                (rare.get(other, 0.0) + _exact(mine, other, values, weight_of, popular), other)
                for other in shortlist
            ]
        exact.sort(key=itemgetter(0), reverse=True)
        for score, other in exact[:top_k]:
            if score > 0:
                edges[(min(person, other), max(person, other))] = score
    return edges


def _exact(
    mine: Mapping[int, list[tuple[InterestKind, float]]],
    other: int,
    values: Mapping[int, float],
    weight_of: Mapping[tuple[int, InterestKind], Mapping[int, float]],
    only: Sequence[int] | None = None,
) -> float:
    """A pair's exact score (over `only` these topics of mine, or all): per topic the best
    compatible combination of kinds."""
    total = 0.0
    for topic_id in mine if only is None else only:
        kinds = mine[topic_id]
        best = 0.0
        for kind, weight in kinds:
            for partner_kind in _PARTNER_KINDS[kind]:
                theirs = weight_of.get((topic_id, partner_kind))
                if theirs is not None:
                    best = max(best, weight * theirs.get(other, 0.0))
        total += values[topic_id] * best
    return total
