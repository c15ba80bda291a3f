"""Availability (weekly cap, snooze, opt-out, the rolling week) is decided in one pure module,
and the SQL that must apply it itself is built from fragments that mirror it: both side by
side here, and a grep over the matcher's sources that each rule is written once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.matcher.availability import (
    ROLLING_MONTH,
    ROLLING_WEEK,
    may_take_another,
    reachable,
    snoozed,
    within_cap,
)
from services.matcher.store import contacts as contact_sql
from services.matcher.store.resources import may_take_another_resource
from services.matcher.store.rows import Availability

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
MATCHER = Path(__file__).resolve().parents[2] / "services" / "matcher"


@dataclass(frozen=True)
class State:
    deliverable: bool = True
    opted_out: bool = False
    snoozed_until: datetime | None = None
    recent_intros: int = 0


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (State(), True),
        (State(recent_intros=1), True),
        (State(recent_intros=2), False),  # at the cap
        (State(recent_intros=3), False),
        (State(opted_out=True), False),
        (State(deliverable=False), False),
        (State(snoozed_until=NOW + timedelta(seconds=1)), False),
        (State(snoozed_until=NOW), True),  # a snooze ends at its moment
        (State(snoozed_until=NOW - timedelta(days=1)), True),
    ],
)
def test_may_take_another(state: State, expected: bool) -> None:
    assert may_take_another(state, NOW, cap_per_week=2) is expected


def test_a_running_count_replaces_the_stored_one() -> None:
    assert not may_take_another(State(recent_intros=0), NOW, 2, recent=2)
    assert may_take_another(State(recent_intros=5), NOW, 2, recent=1)


def test_within_cap_counts_the_groups_kept_before() -> None:
    locked = {
        1: Availability(1, False, True, None),  # one slot left
        2: Availability(0, False, True, None),
        3: Availability(0, False, True, None),
        4: Availability(0, True, True, None),  # opted out since the plan
    }
    groups = [(1, 2), (1, 3), (2, 3), (3, 4), (2, 5)]  # 5: not stored (erased)
    assert within_cap(groups, lambda g: g, locked, NOW, 2) == [(1, 2), (2, 3)]


def test_within_cap_keeps_order_and_nothing_of_nothing() -> None:
    locked = {i: Availability(0, False, True, None) for i in range(1, 5)}
    assert within_cap([(3, 4), (1, 2)], lambda g: g, locked, NOW, 2) == [(3, 4), (1, 2)]
    assert within_cap([], lambda g: g, locked, NOW, 2) == []


def test_the_sql_fragments_mirror_the_python_rules() -> None:
    # Reachable: deliverable and not opted out, on whichever alias the statement uses.
    assert contact_sql.reachable("c") == "c.deliverable AND NOT c.opted_out"
    assert reachable(True, False) and not reachable(False, False) and not reachable(True, True)
    # The rolling week the caps count in.
    days = re.fullmatch(r"now\(\) - interval '(\d+) days'", contact_sql.WEEK_AGO)
    assert days is not None and timedelta(days=int(days.group(1))) == ROLLING_WEEK
    assert contact_sql.WEEK_AGO in contact_sql.RECENT_INTROS
    # The rolling month a person's own monthly cap counts in, counted only under such a cap.
    days = re.fullmatch(r"now\(\) - interval '(\d+) days'", contact_sql.MONTH_AGO)
    assert days is not None and timedelta(days=int(days.group(1))) == ROLLING_MONTH
    assert contact_sql.intros_since(contact_sql.MONTH_AGO) in contact_sql.MONTH_INTROS
    assert contact_sql.MONTH_INTROS.startswith("CASE WHEN c.own_cap_per_month IS NULL THEN 0")
    # Snoozed until a moment still to come; a snooze ending now is over (<= now() in SQL).
    assert contact_sql.NOT_SNOOZED == "(c.snoozed_until IS NULL OR c.snoozed_until <= now())"
    assert not snoozed(NOW, NOW) and snoozed(NOW + timedelta(seconds=1), NOW)
    # The resource cap applies the whole rule: reachable, not snoozed, under the cap this week.
    room = may_take_another_resource("$9")
    for fragment in (contact_sql.reachable("c"), contact_sql.NOT_SNOOZED, contact_sql.WEEK_AGO):
        assert fragment in room
    assert room.endswith("< $9")


def _sources() -> str:
    return "\n".join(p.read_text() for p in sorted(MATCHER.rglob("*.py")))


@pytest.mark.parametrize(
    "fragment",
    [
        "deliverable AND NOT",  # reachable (store/contacts.py)
        "interval '7 days'",  # the rolling week (store/contacts.py)
        "interval '30 days'",  # the rolling month (store/contacts.py)
        "month_count < own_cap_per_month",  # under one's own monthly cap (availability.py)
        "snoozed_until <= now()",  # not snoozed (store/contacts.py)
        "pp.created_at > ",  # introductions in the rolling week (store/contacts.py)
        "ORDER BY id FOR NO KEY UPDATE",  # contact row locks in id order (store/contacts.py)
        "r.created_at > ",  # resources in the rolling week (store/resources.py)
        "count < cap_per_week",  # under the cap (availability.py)
        "counts[i] += 1",  # the locked re-check loop (availability.py)
        "def may_take_another(",
        "def available(",
        "def topic_boost(",
        "topic_boost(meetings)",  # the boost applied in scoring.py only, never in the store
    ],
)
def test_each_rule_is_written_once(fragment: str) -> None:
    assert _sources().count(fragment) == 1, fragment


def test_rounds_take_no_rule_from_the_live_use_case() -> None:
    assert "services.matcher.service" not in (MATCHER / "rounds.py").read_text()
