"""Withdrawn interests as plain Python (services/matcher/withdrawals.py): which kinds a
withdrawal covers, the newest withdrawal per identity's interest, only known identities, and
topic counts that drop only for people left with no kind of the topic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.matcher.store.rows import Resolved, WithdrawalRow
from services.matcher.withdrawals import (
    kinds_of,
    latest_withdrawals,
    topic_decrements,
    withdrawal_rows,
)
from shared.events import InterestKind, InterestWithdrawalData, InterestWithdrawn

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def withdrawn(external_id: str, topic: str, kind: str | None, at: datetime) -> InterestWithdrawn:
    return InterestWithdrawn(
        source="ingest",
        correlation_id="c",
        occurred_at=at,
        data=InterestWithdrawalData(
            source="crm",
            external_id=external_id,
            topic=topic,
            kind=None if kind is None else InterestKind(kind),
        ),
    )


def test_a_withdrawal_covers_its_kind_or_every_kind() -> None:
    assert kinds_of(InterestKind.SEEKS) == (InterestKind.SEEKS,)
    assert set(kinds_of(None)) == {InterestKind.LIKES, InterestKind.SEEKS, InterestKind.OFFERS}


def test_the_newest_withdrawal_of_each_interest_counts() -> None:
    later = T0 + timedelta(minutes=5)
    latest = latest_withdrawals(
        [
            withdrawn("42", "Kites", "likes", later),
            withdrawn("42", "kites", "likes", T0),  # an older copy, normalised the same
            withdrawn("43", "kites", None, T0),
        ]
    )
    assert latest[("crm", "42", "kites", InterestKind.LIKES)] == later
    assert {k for k in latest if k[1] == "43"} == {
        ("crm", "43", "kites", kind) for kind in InterestKind
    }
    assert len(latest) == 4


def test_rows_only_for_identities_the_matcher_knows() -> None:
    latest = {
        ("crm", "42", "kites", InterestKind.LIKES): T0,
        ("crm", "99", "kites", InterestKind.LIKES): T0,  # never seen: nothing to withdraw
    }
    rows = withdrawal_rows(latest, {("crm", "42"): Resolved(contact_id=7, identity_id=70)})
    assert rows == [WithdrawalRow(7, 70, "kites", InterestKind.LIKES, T0)]


def test_a_topic_counts_one_person_fewer_only_when_they_hold_no_kind_of_it() -> None:
    removed = [(1, 10), (2, 10), (3, 20)]
    # Person 2 still seeks topic 10 after withdrawing their `likes` of it.
    assert topic_decrements(removed, {(2, 10)}) == {10: 1, 20: 1}
    assert topic_decrements([], set()) == {}
    assert topic_decrements([(1, 10), (1, 10)], set()) == {10: 1}
