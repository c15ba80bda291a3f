"""Group introductions beyond rounds: when a handful of people share a rare topic and none of
them know each other yet, one introduction to all of them rather than separate pairs.
Plain Python, no I/O.

A topic qualifies when 3 to `max_size` reachable people like it (so it is rare by definition),
every one of them is available (not snoozed, not at the cap) and no two of them are forbidden
to meet (already introduced, blocked, colleagues). Each person joins at most one group per
pass; topics are taken in id order, so the outcome is deterministic. A group is proposed when,
after its members' row locks (`availability.within_cap`), its topic alone is worth an
introduction for each pair in it (`worth_a_group`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import combinations

from services.matcher.availability import available
from services.matcher.constraints import Person, Rules, forbidden
from services.matcher.scoring import TopicStats, topic_value

MIN_GROUP = 3


def topic_groups(
    holders: Mapping[int, Sequence[int]],
    people: Mapping[int, Person],
    now: datetime,
    rules: Rules,
    max_size: int,
) -> list[tuple[int, tuple[int, ...]]]:
    """(topic id, sorted members) for each topic whose holders can meet as one group."""
    used: set[int] = set()
    found = []
    for topic_id in sorted(holders):
        members = tuple(sorted(set(holders[topic_id])))
        if not MIN_GROUP <= len(members) <= max_size or used.intersection(members):
            continue
        if any(m not in people or not available(people[m], now, rules) for m in members):
            continue
        if any(forbidden(people[a], people[b], rules) for a, b in combinations(members, 2)):
            continue
        found.append((topic_id, members))
        used.update(members)
    return found


def worth_a_group(
    groups: Sequence[tuple[int, tuple[int, ...]]],
    stats: Mapping[int, TopicStats],
    population: int,
    min_score: float,
) -> list[tuple[int, tuple[int, ...]]]:
    """The groups whose topic is worth an introduction on its own to each pair in them."""
    return [(t, m) for t, m in groups if topic_value(stats[t], population) >= min_score]
