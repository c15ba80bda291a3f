"""Whether a person may take another introduction now: the weekly cap (the operator's, or the
person's own lower one from their preferences page), the person's own monthly cap, snooze and
opt-out, in one place. Plain Python, no I/O.

Live matching, group introductions, rounds and round planning all ask `may_take_another`; the
final word is `within_cap`, run on the state each member's contact row holds under its lock
(`store/contacts.py`, `ContactRecords.lock_availability`), so two matchers cannot both use a
person's last slot. The SQL that must apply the same rule itself (resources, under row locks;
the counts of the rolling week) is built from fragments in `store/contacts.py` that name these
functions; `tests/unit/test_availability.py` holds the two side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from services.matcher.constraints import Rules

# The weekly cap counts introductions in the last seven days, a rolling window (not a
# calendar week). The SQL counting them is `store.contacts.WEEK_AGO`.
ROLLING_WEEK = timedelta(days=7)
# A person's own monthly cap counts introductions in the last thirty days, rolling too (SQL:
# `store.contacts.MONTH_AGO`). There is no operator's monthly cap: the weekly one bounds it.
ROLLING_MONTH = timedelta(days=30)


class Standing(Protocol):
    """What decides whether a person may take another introduction."""

    @property
    def deliverable(self) -> bool: ...  # has a channel to be reached on
    @property
    def opted_out(self) -> bool: ...
    @property
    def snoozed_until(self) -> datetime | None: ...
    @property
    def recent_intros(self) -> int: ...  # introductions within ROLLING_WEEK

    # Optional: `own_cap_per_week` and `own_cap_per_month` (int | None), the person's own caps
    # from their preferences page, and `month_intros` (introductions within ROLLING_MONTH); a
    # state without them has no cap of its own (read with `own_cap` and `own_monthly_cap`).


def reachable(deliverable: bool, opted_out: bool) -> bool:
    """Can be reached and has not opted out (SQL: `store.contacts.reachable`)."""
    return deliverable and not opted_out


def snoozed(snoozed_until: datetime | None, now: datetime) -> bool:
    """Paused until a moment still to come (SQL: `store.contacts.NOT_SNOOZED`)."""
    return snoozed_until is not None and snoozed_until > now


def personal_cap(cap_per_week: int, own_cap_per_week: int | None) -> int:
    """The weekly cap that holds for one person: their own when they chose one, never above
    the operator's."""
    if own_cap_per_week is None:
        return cap_per_week
    return max(0, min(cap_per_week, own_cap_per_week))


def own_cap(state: Standing) -> int | None:
    """The person's own weekly cap, when their state carries one."""
    cap = getattr(state, "own_cap_per_week", None)
    return cap if isinstance(cap, int) else None


def own_monthly_cap(state: Standing) -> int | None:
    """The person's own monthly cap, when their state carries one."""
    cap = getattr(state, "own_cap_per_month", None)
    return cap if isinstance(cap, int) else None


def within_monthly_cap(month_count: int, own_cap_per_month: int | None) -> bool:
    """Under the person's own monthly cap, or they chose none."""
    return own_cap_per_month is None or month_count < own_cap_per_month


def may_take_another(
    state: Standing,
    now: datetime,
    cap_per_week: int,
    recent: int | None = None,
    recent_month: int | None = None,
) -> bool:
    """Whether the person may take one more introduction now: reachable, not snoozed, under
    the weekly cap (theirs when lower than the operator's) and under their own monthly cap
    (`recent` and `recent_month`, when given, count instead of the state's: the introductions
    this transaction already gave them count too)."""
    count = state.recent_intros if recent is None else recent
    month = getattr(state, "month_intros", 0) if recent_month is None else recent_month
    cap_per_week = personal_cap(cap_per_week, own_cap(state))
    return (
        reachable(state.deliverable, state.opted_out)
        and count < cap_per_week
        and within_monthly_cap(month, own_monthly_cap(state))
        and not snoozed(state.snoozed_until, now)
    )


def available(person: Standing, now: datetime, rules: Rules) -> bool:
    """Whether the person may get another introduction now, under the rules' weekly cap."""
    return may_take_another(person, now, rules.cap_per_week)


G = TypeVar("G")


def within_cap(
    groups: Iterable[G],
    members: Callable[[G], Sequence[int]],
    locked: Mapping[int, Standing],
    now: datetime,
    cap_per_week: int,
) -> list[G]:
    """The groups, in order, whose members may each take one more introduction, counting the
    groups kept before them. `locked` is each member's state read under its row lock; a member
    missing from it (never stored, or erased) drops their group."""
    counts = {i: state.recent_intros for i, state in locked.items()}
    monthly = {i: getattr(state, "month_intros", 0) for i, state in locked.items()}
    kept = []
    for group in groups:
        ids = members(group)
        if all(
            i in locked and may_take_another(locked[i], now, cap_per_week, counts[i], monthly[i])
            for i in ids
        ):
            for i in ids:
                counts[i] += 1
                monthly[i] += 1
            kept.append(group)
    return kept
