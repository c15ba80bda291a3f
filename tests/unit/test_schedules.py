"""Calendar schedules of pools (services/matcher/schedules.py), table-driven, without a
database: the next slot after a moment, across daylight-saving changes in Europe/Berlin
(2027-03-28 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00) and America/New_York (2027-03-14
02:00 -> 03:00, 2026-11-01 02:00 -> 01:00), every other week from the anchor week, the
interval schedule's first round at once, and the API's field-level refusals."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest
from pydantic import ValidationError

from services.matcher.pool_routes import PoolIn
from services.matcher.schedules import (
    WeeklySchedule,
    anchored,
    first_round_at,
    local_instant,
    next_run,
    round_after,
)
from services.matcher.schedules import zone as tz_zone

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def weekly(
    days: str, at: str, zone: str, every_weeks: int = 1, starting: str | None = None
) -> WeeklySchedule:
    return WeeklySchedule.from_json(
        {
            "weekdays": days.split(),
            "at": at,
            "timezone": zone,
            "every_weeks": every_weeks,
            "starting": starting,
        }
    )


NEXT_RUN = [
    # (what, schedule, after, expected next run in UTC)
    (
        "monday 09:00 in winter (UTC+1)",
        weekly("mon", "09:00", BERLIN),
        utc(2027, 3, 19, 12),
        utc(2027, 3, 22, 8),
    ),
    (
        "monday 09:00 after spring forward (UTC+2)",
        weekly("mon", "09:00", BERLIN),
        utc(2027, 3, 22, 8),
        utc(2027, 3, 29, 7),
    ),
    (
        "strictly after: at the slot itself, the next week's",
        weekly("mon", "09:00", BERLIN),
        utc(2027, 3, 29, 7),
        utc(2027, 4, 5, 7),
    ),
    (
        "a second before the slot: the slot",
        weekly("mon", "09:00", BERLIN),
        utc(2027, 3, 29, 6, 59, 59),
        utc(2027, 3, 29, 7),
    ),
    (
        "monday 09:00 after fall back (UTC+1 again)",
        weekly("mon", "09:00", BERLIN),
        utc(2026, 10, 20),
        utc(2026, 10, 26, 8),
    ),
    (
        "on the spring-forward day, before the change",
        weekly("sun", "01:30", BERLIN),
        utc(2027, 3, 27),
        utc(2027, 3, 28, 0, 30),
    ),
    (
        "skipped 02:30 runs at the first valid instant, 03:00 CEST",
        weekly("sun", "02:30", BERLIN),
        utc(2027, 3, 27),
        utc(2027, 3, 28, 1),
    ),
    (
        "skipped 02:00 too (the gap's first second)",
        weekly("sun", "02:00", BERLIN),
        utc(2027, 3, 27),
        utc(2027, 3, 28, 1),
    ),
    (
        "03:00 just after the gap is itself",
        weekly("sun", "03:00", BERLIN),
        utc(2027, 3, 27),
        utc(2027, 3, 28, 1),
    ),
    (
        "repeated 02:30 runs once, at the first (CEST)",
        weekly("sun", "02:30", BERLIN),
        utc(2026, 10, 24),
        utc(2026, 10, 25, 0, 30),
    ),
    (
        "after the first 02:30, not the second: next week",
        weekly("sun", "02:30", BERLIN),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 11, 1, 1, 30),
    ),
    (
        "between the two 02:30s, still not the second",
        weekly("sun", "02:30", BERLIN),
        utc(2026, 10, 25, 1, 0),
        utc(2026, 11, 1, 1, 30),
    ),
    (
        "New York 09:00 in winter (UTC-5)",
        weekly("mon", "09:00", NEW_YORK),
        utc(2027, 3, 5),
        utc(2027, 3, 8, 14),
    ),
    (
        "New York 09:00 after spring forward (UTC-4)",
        weekly("mon", "09:00", NEW_YORK),
        utc(2027, 3, 8, 14),
        utc(2027, 3, 15, 13),
    ),
    (
        "New York skipped 02:30 runs at 03:00 EDT",
        weekly("sun", "02:30", NEW_YORK),
        utc(2027, 3, 13),
        utc(2027, 3, 14, 7),
    ),
    (
        "New York repeated 01:30 runs at the first (EDT)",
        weekly("sun", "01:30", NEW_YORK),
        utc(2026, 10, 31),
        utc(2026, 11, 1, 5, 30),
    ),
    (
        "New York after the first 01:30: next week (EST)",
        weekly("sun", "01:30", NEW_YORK),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 8, 6, 30),
    ),
    (
        "New York 09:00 after fall back (UTC-5)",
        weekly("mon", "09:00", NEW_YORK),
        utc(2026, 10, 27),
        utc(2026, 11, 2, 14),
    ),
    (
        "several weekdays: the nearest",
        weekly("mon wed fri", "18:00", BERLIN),
        utc(2027, 3, 22, 17, 1),
        utc(2027, 3, 24, 17),
    ),
    (
        "local date differs from UTC date",
        weekly("tue", "00:30", BERLIN),
        utc(2027, 3, 22, 22),
        utc(2027, 3, 22, 23, 30),
    ),
    (
        "every other week from the anchor week",
        weekly("mon", "10:00", BERLIN, 2, "2027-03-22"),
        utc(2027, 3, 22, 9),
        utc(2027, 4, 5, 8),
    ),
    (
        "every other week: the week between is skipped",
        weekly("mon", "10:00", BERLIN, 2, "2027-03-22"),
        utc(2027, 3, 29, 7),
        utc(2027, 4, 5, 8),
    ),
    (
        "every other week, several days, all in the anchor's parity",
        weekly("mon thu", "10:00", BERLIN, 2, "2027-03-22"),
        utc(2027, 3, 26),
        utc(2027, 4, 5, 8),
    ),
    (
        "nothing before `starting`",
        weekly("mon", "09:00", BERLIN, 1, "2027-04-12"),
        utc(2027, 3, 19),
        utc(2027, 4, 12, 7),
    ),
    (
        "every third week",
        weekly("fri", "12:00", NEW_YORK, 3, "2027-01-01"),
        utc(2027, 1, 2),
        utc(2027, 1, 22, 17),
    ),
]


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [case[1:] for case in NEXT_RUN],
    ids=[case[0] for case in NEXT_RUN],
)
def test_next_run(schedule: WeeklySchedule, after: datetime, expected: datetime) -> None:
    found = next_run(schedule, after)
    assert found == expected
    assert found.utcoffset() is not None and found.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_the_local_time_stays_put_across_a_year_of_mondays() -> None:
    schedule = weekly("mon", "09:00", BERLIN)
    when = utc(2026, 12, 6)
    for _ in range(60):
        when = next_run(schedule, when)
        local = when.astimezone(tz_zone(BERLIN))
        assert (local.weekday(), local.time()) == (0, time(9, 0))


def test_a_repeated_time_runs_once_on_a_fall_back_day() -> None:
    daily = weekly("mon tue wed thu fri sat sun", "02:30", BERLIN)
    runs = [next_run(daily, utc(2026, 10, 24, 12))]
    while len(runs) < 3:
        runs.append(next_run(daily, runs[-1]))
    assert runs == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]


def test_a_skipped_time_resolves_to_the_change_itself() -> None:
    assert local_instant(date(2027, 3, 28), time(2, 59), tz_zone(BERLIN)) == utc(2027, 3, 28, 1)
    assert local_instant(date(2027, 3, 14), time(2, 0), tz_zone(NEW_YORK)) == utc(2027, 3, 14, 7)


def test_every_other_week_counts_from_the_week_of_the_first_slot() -> None:
    # Saved on a Tuesday: next Monday is the first slot, then every second Monday.
    schedule = anchored(weekly("mon", "10:00", BERLIN, 2), utc(2027, 3, 16, 12))
    assert schedule.starting == date(2027, 3, 22)
    runs = [next_run(schedule, utc(2027, 3, 16, 12))]
    while len(runs) < 3:
        runs.append(next_run(schedule, runs[-1]))
    assert runs == [utc(2027, 3, 22, 9), utc(2027, 4, 5, 8), utc(2027, 4, 19, 8)]
    # An anchor already set is kept.
    assert anchored(schedule, utc(2027, 6, 1)) == schedule


def test_the_first_round_comes_at_the_first_slot() -> None:
    saved = utc(2027, 3, 19, 12)
    assert first_round_at(None, weekly("mon", "09:00", BERLIN), saved) == utc(2027, 3, 22, 8)
    assert first_round_at(86_400, None, saved) == saved  # an interval's: at once
    assert first_round_at(None, None, saved) is None


def test_the_round_after_one_due() -> None:
    due, day = utc(2027, 3, 22, 8), 86_400
    assert round_after(day, None, due, utc(2027, 3, 22, 8, 0, 1)) == utc(2027, 3, 23, 8)
    # Missed for long: one round for all, then the next slot after now (the phase kept).
    assert round_after(day, None, due, utc(2027, 4, 1)) == utc(2027, 4, 1, 8)
    assert round_after(day, None, due, utc(2027, 4, 1, 8)) == utc(2027, 4, 2, 8)
    schedule = weekly("mon", "09:00", BERLIN)
    assert round_after(None, schedule, due, utc(2027, 3, 22, 8)) == utc(2027, 3, 29, 7)
    assert round_after(None, schedule, due, utc(2027, 4, 1)) == utc(2027, 4, 5, 7)
    assert round_after(None, None, due, utc(2027, 4, 1)) is None


def test_a_schedule_round_trips_through_json() -> None:
    schedule = weekly("fri mon", "07:05", NEW_YORK, 2, "2027-01-04")
    assert schedule.to_json() == {
        "weekdays": ["mon", "fri"],
        "at": "07:05",
        "timezone": NEW_YORK,
        "every_weeks": 2,
        "starting": "2027-01-04",
    }
    assert WeeklySchedule.from_json(schedule.to_json()) == schedule


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_run(weekly("mon", "09:00", BERLIN), datetime(2027, 3, 22))


BAD_SCHEDULES = [
    ({"weekdays": ["monday"], "at": "09:00", "timezone": BERLIN}, "schedule.weekdays.0"),
    ({"weekdays": [], "at": "09:00", "timezone": BERLIN}, "schedule.weekdays"),
    ({"weekdays": ["mon"], "at": "9am", "timezone": BERLIN}, "schedule.at"),
    ({"weekdays": ["mon"], "at": "24:00", "timezone": BERLIN}, "schedule.at"),
    ({"weekdays": ["mon"], "at": "09:60", "timezone": BERLIN}, "schedule.at"),
    ({"weekdays": ["mon"], "at": "09:00", "timezone": "Mars/Olympus"}, "schedule.timezone"),
    ({"weekdays": ["mon"], "at": "09:00", "timezone": "../etc/passwd"}, "schedule.timezone"),
    (
        {"weekdays": ["mon"], "at": "09:00", "timezone": BERLIN, "every_weeks": 0},
        "schedule.every_weeks",
    ),
    (
        {"weekdays": ["mon"], "at": "09:00", "timezone": BERLIN, "cron": "* * * * *"},
        "schedule.cron",
    ),
    ({"weekdays": ["mon"], "at": "09:00"}, "schedule.timezone"),
]


@pytest.mark.parametrize(("schedule", "field"), BAD_SCHEDULES)
def test_the_api_names_the_bad_field(schedule: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        PoolIn.model_validate({"name": "p", "schedule": schedule})
    assert [".".join(str(p) for p in e["loc"]) for e in refused.value.errors()] == [field]


def test_a_pool_has_an_interval_or_a_schedule_not_both() -> None:
    schedule = {"weekdays": ["mon"], "at": "09:00", "timezone": BERLIN}
    with pytest.raises(ValidationError) as refused:
        PoolIn.model_validate({"name": "p", "every_seconds": 86_400, "schedule": schedule})
    assert [e["loc"] for e in refused.value.errors()] == [("schedule",)]
    assert PoolIn.model_validate({"name": "p", "schedule": schedule}).schedule is not None
    assert PoolIn.model_validate({"name": "p", "every_seconds": 86_400}).schedule is None
    assert PoolIn.model_validate({"name": "p"}).every_seconds is None
