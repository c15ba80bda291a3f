"""Cron schedules (services/matcher/cron.py, CronSchedule in schedules.py): the grammar, with a
clear error naming the field, and the slots on a pool's local wall clock across daylight-saving
changes, as a table without a database."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.matcher.cron import parse_cron
from services.matcher.pool_routes import PoolIn
from services.matcher.schedules import CronSchedule, next_run, schedule_from_json

BERLIN = "Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "zone", "after", "expected"),
    [
        # Mondays at 09:00 in Berlin: 08:00 UTC in winter, 07:00 UTC in summer.
        ("0 9 * * mon", BERLIN, utc(2026, 3, 20), utc(2026, 3, 23, 8)),
        ("0 9 * * mon", BERLIN, utc(2026, 3, 23, 8), utc(2026, 3, 30, 7)),  # after spring fwd
        ("0 9 * * 1", BERLIN, utc(2026, 10, 20), utc(2026, 10, 26, 8)),  # after fall back
        ("0 9 * * 7", BERLIN, utc(2026, 12, 6, 9), utc(2026, 12, 13, 8)),  # 7 is Sunday too
        # The first of each month at 10:30.
        ("30 10 1 * *", "UTC", utc(2026, 12, 6), utc(2027, 1, 1, 10, 30)),
        # Both day fields restricted: either matches (crontab(5)).
        ("0 12 15 * fri", "UTC", utc(2026, 12, 6), utc(2026, 12, 11, 12)),
        ("0 12 15 * fri", "UTC", utc(2026, 12, 12), utc(2026, 12, 15, 12)),
        # Steps, ranges, lists, names.
        ("*/20 8-9 * * *", "UTC", utc(2026, 12, 6, 9, 40), utc(2026, 12, 7, 8)),
        ("0 8,17 * jan-mar mon-fri", "UTC", utc(2026, 12, 6), utc(2027, 1, 1, 8)),
        ("@weekly", "UTC", utc(2026, 12, 6, 0, 0), utc(2026, 12, 13)),
        ("@monthly", BERLIN, utc(2026, 12, 6), utc(2026, 12, 31, 23)),
        # Leap day only: the next February 29th.
        ("0 0 29 2 *", "UTC", utc(2026, 12, 6), utc(2028, 2, 29)),
        # A time skipped when clocks spring forward runs at the change (03:00 CEST, 01:00 UTC).
        ("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 29, 1)),
        # A time repeated when clocks fall back runs once, at the first (02:30 CEST).
        ("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), utc(2026, 10, 25, 0, 30)),
        ("30 2 * * *", BERLIN, utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)),
    ],
)
def test_next_run(cron: str, zone: str, after: datetime, expected: datetime) -> None:
    assert next_run(CronSchedule(cron, zone), after) == expected


def test_the_local_time_stays_put_across_a_year_of_mondays() -> None:
    schedule = CronSchedule("0 9 * * mon", BERLIN)
    slot = utc(2026, 1, 1)
    for _ in range(53):
        slot = next_run(schedule, slot)
        local = slot.astimezone(ZoneInfo(BERLIN))
        assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 9 * *", "five fields"),
        ("0 9 * * * 2026", "five fields"),
        ("60 9 * * *", "minute '60': 60 is outside 0-59"),
        ("0 24 * * *", "hour '24'"),
        ("0 9 0 * *", "day of month '0'"),
        ("0 9 * 13 *", "month '13'"),
        ("0 9 * * 8", "day of week '8'"),
        ("0 9 * * funday", "day of week 'funday': expected a number from 0 to 7 or a name"),
        ("0 9 L * *", "day of month 'L'"),
        ("0 9 * * 1#2", "day of week '1#2'"),
        ("0 9 * * ?", "day of week '?'"),
        ("*/0 9 * * *", "a step is a whole number from 1"),
        ("0 17-9 * * *", "a range runs from low to high"),
        ("@hourlyish", "unknown shorthand"),
    ],
)
def test_a_bad_expression_names_the_field(cron: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_cron(cron)


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_an_expression_that_never_runs_is_refused(cron: str) -> None:
    with pytest.raises(ValueError, match="never runs"):
        CronSchedule(cron, "UTC")


def test_an_unknown_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="IANA time zone"):
        CronSchedule("0 9 * * mon", "Mars/Olympus")


def test_a_cron_schedule_round_trips_through_json_and_is_told_from_a_weekly_one() -> None:
    schedule = CronSchedule("0  9 * *   MON", BERLIN)
    stored = schedule.to_json()
    assert stored == {"cron": "0 9 * * MON", "timezone": BERLIN}
    assert schedule_from_json(stored) == schedule
    weekly = schedule_from_json({"weekdays": ["mon"], "at": "09:00", "timezone": BERLIN})
    assert not isinstance(weekly, CronSchedule)
    assert next_run(weekly, utc(2026, 3, 20)) == next_run(schedule, utc(2026, 3, 20))


def test_the_day_rule_matches_crontab() -> None:
    expression = parse_cron("0 0 1 * mon")
    assert expression.matches_day(date(2026, 12, 1))  # a Tuesday, the 1st
    assert expression.matches_day(date(2026, 12, 7))  # a Monday
    assert not expression.matches_day(date(2026, 12, 8))
    # A day field starting with `*` is not "restricted" (Vixie cron): then both must hold.
    odd_mondays = parse_cron("0 9 */2 * mon")
    assert odd_mondays.matches_day(date(2026, 12, 7))  # the 7th, a Monday
    assert not odd_mondays.matches_day(date(2026, 12, 14))  # a Monday, an even day
    assert not odd_mondays.matches_day(date(2026, 12, 9))  # an odd day, a Wednesday
    assert parse_cron("0 9 * * */2").matches_day(date(2026, 12, 6))  # Sunday is day 0


@pytest.mark.parametrize(
    ("schedule", "field", "message"),
    [
        ({"cron": "0 9 * *", "timezone": BERLIN}, "schedule.cron", "five fields"),
        ({"cron": "0 25 * * *", "timezone": BERLIN}, "schedule.cron", "hour '25'"),
        ({"cron": "0 0 30 2 *", "timezone": BERLIN}, "schedule.cron", "never runs"),
        (
            {"cron": "0 9 * * mon", "timezone": BERLIN, "every_weeks": 2},
            "schedule.cron",
            "not cron",
        ),
        ({"cron": "0 9 * * mon", "timezone": "Mars/Olympus"}, "schedule.timezone", "zone"),
        ({"cron": "0 9 * * mon\n", "timezone": BERLIN}, "schedule.cron", ""),
        ({"timezone": BERLIN}, "schedule", "weekdays and at (or a cron expression)"),
    ],
)
def test_the_pools_api_names_the_bad_cron_field(
    schedule: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        PoolIn.model_validate({"name": "p", "schedule": schedule})
    [error] = refused.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == field
    assert message in error["msg"]


def test_a_cron_pool_is_answered_as_it_was_asked() -> None:
    pool = PoolIn.model_validate(
        {"name": "p", "schedule": {"cron": "0 9 * * mon", "timezone": BERLIN}}
    )
    assert pool.schedule is not None
    assert pool.schedule.to_schedule() == CronSchedule("0 9 * * mon", BERLIN)
    answered = pool.model_dump(mode="json")["schedule"]
    assert "weekdays" not in answered and "at" not in answered
    assert answered["cron"] == "0 9 * * mon"
