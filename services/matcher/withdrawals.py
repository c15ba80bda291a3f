"""Withdrawn interests (`interest.withdrawn.v1`), as plain Python: which rows a batch of
withdrawals asks for, and how topic counts follow. The matcher's service reads and writes around
these (services/matcher/service.py); the SQL is in services/matcher/store/topics.py.

A withdrawal names one identity's interest in a topic, of one kind or of every kind. It removes
what that identity declared no later than the withdrawal; a later declaration brings the interest
back, an older one arriving late does not (the store remembers the withdrawal's time). A topic's
`people` counts the contacts holding it of any kind, so it drops only for a person left with no
kind of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from services.matcher.store.rows import Resolved, WithdrawalRow
from shared.events import InterestKind, InterestWithdrawn

# (source, external_id, topic, kind): one kind of one topic of one identity.
WithdrawalKey = tuple[str, str, str, InterestKind]


def kinds_of(kind: InterestKind | None) -> tuple[InterestKind, ...]:
    """The kinds a withdrawal covers: the one named, or every kind."""
    return (kind,) if kind is not None else tuple(InterestKind)


def latest_withdrawals(events: Iterable[InterestWithdrawn]) -> dict[WithdrawalKey, datetime]:
    """Each identity's interest (topic and kind) withdrawn, with its newest withdrawal time."""
    latest: dict[WithdrawalKey, datetime] = {}
    for event in events:
        d = event.data
        for kind in kinds_of(d.kind):
            key = (d.source, d.external_id, d.topic, kind)
            if key not in latest or latest[key] < event.occurred_at:
                latest[key] = event.occurred_at
    return latest


def withdrawal_rows(
    latest: Mapping[WithdrawalKey, datetime], known: Mapping[tuple[str, str], Resolved]
) -> list[WithdrawalRow]:
    """The rows to apply, for identities the matcher knows (of anyone else it holds nothing)."""
    return [
        WithdrawalRow(
            contact_id=found.contact_id,
            identity_id=found.identity_id,
            topic=topic,
            kind=kind,
            withdrawn_at=at,
        )
        for (source, external_id, topic, kind), at in sorted(latest.items())
        for found in (known.get((source, external_id)),)
        if found is not None
    ]


def topic_decrements(
    removed: Iterable[tuple[int, int]], still_held: Iterable[tuple[int, int]]
) -> dict[int, int]:
    """By topic, how many people stopped holding it: those that lost an interest in it and
    hold no other kind of it."""
    held = set(still_held)
    decrements: dict[int, int] = {}
    for _contact, topic in set(removed) - held:
        decrements[topic] = decrements.get(topic, 0) + 1
    return decrements
