"""When a pool's rounds come due: weekday-and-time schedules in a time zone ("Mondays at 09:00
Europe/Berlin", "every other Monday at 10:00"), cron expressions on the same local wall clock
("0 9 1-7 * mon": services/matcher/cron.py), and the older fixed interval (`every_seconds`).

Pure (no I/O, no clock: the caller passes the time), so the calendar rules are tested in a
table without a database (tests/unit/test_schedules.py). People think in their local wall
clock, so a slot is a local time, not a UTC one: 09:00 stays 09:00 across daylight-saving
changes. A local time that does not exist (skipped when clocks spring forward) runs at the
first valid instant after it; one that exists twice (clocks fall back) runs once, at the first.
`every_weeks` counts weeks (Monday to Sunday, local) from the schedule's `starting` week,
fixed when the pool is saved to the week of its first slot.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.matcher.cron import CronExpression, parse_cron

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_EVERY_WEEKS = 52


def weekday_number(name: str) -> int:
    """0 for "mon" ... 6 for "sun"."""
    try:
        return WEEKDAYS.index(name)
    except ValueError:
        raise ValueError(f"must be one of {', '.join(WEEKDAYS)}") from None


def wall_time(text: str) -> time:
    """A local time of day written "HH:MM" (24-hour clock)."""
    hours, sep, minutes = text.partition(":")
    if not (sep and len(hours) == 2 and len(minutes) == 2 and (hours + minutes).isdigit()):
        raise ValueError("must be a time of day written HH:MM, such as '09:00'")
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError("must be a time of day from 00:00 to 23:59")
    return time(int(hours), int(minutes))


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone name such as 'Europe/Berlin'") from None


@dataclass(frozen=True)
class WeeklySchedule:
    """Rounds on these weekdays at this local time, every `every_weeks` weeks counted from the
    week (Monday to Sunday) of `starting`, the first local date a round may run (None: the
    date of the first slot)."""

    weekdays: frozenset[int]
    at: time
    timezone: str
    every_weeks: int = 1
    starting: date | None = None

    def __post_init__(self) -> None:
        if not self.weekdays or not self.weekdays <= set(range(7)):
            raise ValueError("weekdays must name at least one day, 0 (Monday) to 6 (Sunday)")
        if not 1 <= self.every_weeks <= MAX_EVERY_WEEKS:
            raise ValueError(f"every_weeks must be 1 to {MAX_EVERY_WEEKS}")
        zone(self.timezone)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WeeklySchedule:
        starting = data.get("starting")
        return cls(
            weekdays=frozenset(weekday_number(d) for d in data["weekdays"]),
            at=wall_time(data["at"]),
            timezone=data["timezone"],
            every_weeks=int(data.get("every_weeks", 1)),
            starting=date.fromisoformat(starting) if starting else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "weekdays": [WEEKDAYS[d] for d in sorted(self.weekdays)],
            "at": self.at.strftime("%H:%M"),
            "timezone": self.timezone,
            "every_weeks": self.every_weeks,
            "starting": self.starting.isoformat() if self.starting else None,
        }


@dataclass(frozen=True)
class CronSchedule:
    """Rounds at the slots of a cron expression read on the local wall clock of `timezone`
    (services/matcher/cron.py has the grammar). An expression with no slot in eight years
    (February 30th) is refused."""

    cron: str
    timezone: str

    def __post_init__(self) -> None:
        zone(self.timezone)
        expression = _expression(self.cron)
        # Stored as written by the grammar (fields split by one space), so equal schedules
        # compare equal whatever spacing they came with.
        object.__setattr__(self, "cron", expression.text)
        if _next_cron_slot(expression, zone(self.timezone), NEVER_CHECK_FROM) is None:
            raise ValueError(f"the cron expression {self.cron!r} never runs")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CronSchedule:
        return cls(cron=data["cron"], timezone=data["timezone"])

    def to_json(self) -> dict[str, Any]:
        return {"cron": self.cron, "timezone": self.timezone}


Schedule = WeeklySchedule | CronSchedule
# A cron expression's slots repeat within 8 years (a February 29th on a given weekday: 28, but
# then another day field matches); none in that span means none ever.
CRON_SEARCH_DAYS = 8 * 366 + 2
NEVER_CHECK_FROM = datetime(2000, 1, 1, tzinfo=UTC)


def schedule_from_json(data: dict[str, Any]) -> Schedule:
    """A stored or requested schedule: a cron one when it has `cron`, else a weekly one."""
    if "cron" in data:
        return CronSchedule.from_json(data)
    return WeeklySchedule.from_json(data)


@lru_cache(maxsize=256)
def _expression(text: str) -> CronExpression:
    return parse_cron(text)


def _next_cron_slot(expression: CronExpression, tz: ZoneInfo, after: datetime) -> datetime | None:
    # A day early: a skipped or repeated hour can put a local day's slot before `after`'s day.
    day = after.astimezone(tz).date() - timedelta(days=1)
    for _ in range(CRON_SEARCH_DAYS):
        if expression.matches_day(day):
            for hour in expression.hours:
                for minute in expression.minutes:
                    slot = local_instant(day, time(hour, minute), tz)
                    if slot > after:
                        return slot
        day += timedelta(days=1)
    return None


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant at which local clocks in `tz` show `at` on `day`: the first of two when
    the time repeats (fall back), the first valid instant after it when it is skipped."""
    wall = datetime.combine(day, at)
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _wall(first, tz) == wall:
        return first
    # Skipped: fold=0 reads the wall time with the offset before the change (an instant after
    # it), fold=1 with the one after (an instant before it). Offsets are whole seconds: find
    # the first second whose local time is past the gap.
    low = int(wall.replace(tzinfo=tz, fold=1).timestamp())
    high = int(first.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), tz) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


@overload
def anchored(schedule: WeeklySchedule, saved_at: datetime) -> WeeklySchedule: ...
@overload
def anchored(schedule: CronSchedule, saved_at: datetime) -> CronSchedule: ...
@overload
def anchored(schedule: Schedule, saved_at: datetime) -> Schedule: ...
def anchored(schedule: Schedule, saved_at: datetime) -> Schedule:
    """The schedule with its `starting` week fixed: the week of its first slot after
    `saved_at` (a schedule that already has one, or a cron one, is returned as it is)."""
    if isinstance(schedule, CronSchedule) or schedule.starting is not None:
        return schedule
    weekly = replace(schedule, every_weeks=1, starting=saved_at.date() - timedelta(days=2))
    first = next_run(weekly, saved_at)
    return replace(schedule, starting=first.astimezone(zone(schedule.timezone)).date())


def next_run(schedule: Schedule, after: datetime) -> datetime:
    """The schedule's first slot strictly after `after` (timezone-aware), in UTC."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    if isinstance(schedule, CronSchedule):
        slot = _next_cron_slot(_expression(schedule.cron), zone(schedule.timezone), after)
        if slot is None:  # refused when built; kept for a row written by hand
            raise ValueError(f"the cron expression {schedule.cron!r} never runs")
        return slot
    if schedule.starting is None:
        schedule = anchored(schedule, after)
        assert isinstance(schedule, WeeklySchedule)
    assert schedule.starting is not None
    tz = zone(schedule.timezone)
    anchor = _monday(schedule.starting)
    # A day early: a skipped or repeated hour can put a local day's slot before `after`'s day.
    day = max(after.astimezone(tz).date() - timedelta(days=1), schedule.starting)
    # Every week of a cycle, plus the days around `after`: at least one slot lies in there.
    for _ in range(7 * schedule.every_weeks + 9):
        weeks = (_monday(day) - anchor).days // 7
        if day.weekday() in schedule.weekdays and weeks % schedule.every_weeks == 0:
            slot = local_instant(day, schedule.at, tz)
            if slot > after:
                return slot
        day += timedelta(days=1)
    raise AssertionError("unreachable: every cycle of weeks holds a slot")  # pragma: no cover


def first_round_at(
    every_seconds: int | None, schedule: Schedule | None, saved_at: datetime
) -> datetime | None:
    """When a newly saved schedule's first round is due: its first slot after `saved_at`. An
    interval's slots start when it is saved, so its first round is due at once."""
    if schedule is not None:
        return next_run(schedule, saved_at)
    if every_seconds is not None:
        return saved_at
    return None


def round_after(
    every_seconds: int | None,
    schedule: Schedule | None,
    due_at: datetime,
    now: datetime,
) -> datetime | None:
    """When the round after the one due at `due_at` (and requested `now`) is due: the first
    slot after now. Slots missed while no matcher ran are not caught up: one round stands for
    them all."""
    if schedule is not None:
        return next_run(schedule, now)
    if every_seconds is not None:
        period = timedelta(seconds=every_seconds)
        # The first slot after now, the interval's phase kept (due_at + k periods).
        return due_at + (max(now - due_at, timedelta(0)) // period + 1) * period
    return None
