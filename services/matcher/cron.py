"""Cron expressions for a pool's schedule ("0 9 * * mon", "30 8 1-7 * 1"): the five classic
fields read on the pool's local wall clock, as plain Python (no I/O, no clock).

Why our own and not a library: the five fields are a small, stable grammar, and what matters
here is how a slot meets a time zone (09:00 stays 09:00 across daylight-saving changes; a skipped
time runs at the change; a repeated one once), which services/matcher/schedules.py already
decides for weekly schedules; the expression only says which local days and times are slots.

Grammar (Vixie cron, as crontab(5) documents it): minute (0-59), hour (0-23), day of month
(1-31), month (1-12 or jan-dec), day of week (0-7 or sun-sat; 0 and 7 are Sunday). Each field is
`*`, a number or name, a range `a-b`, a list `a,b`, or a step `*/n` or `a-b/n`. When both day
fields are restricted, a day matches either (crontab(5)'s rule; as in Vixie cron, a field that
starts with `*`, such as `*/2`, does not count as restricted, and then both must hold);
`@daily`, `@weekly`, `@monthly` are shorthands. Seconds, years, `L`, `W`, `#` and `?` are
refused with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
SHORTHANDS = {
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MAX_LENGTH = 200


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    # The number of the first name (jan is 1, sun is 0).
    first_name: int = 0


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, MONTHS, 1),
    _Field("day of week", 0, 7, DAYS, 0),
)


@dataclass(frozen=True)
class CronExpression:
    """Which local days and times are slots. Built by `parse_cron`."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    months: frozenset[int]
    # Python's weekday numbers: 0 is Monday ... 6 is Sunday.
    weekdays: frozenset[int]
    # The day field starts with `*` (`*`, `*/2`): not "restricted" for the either-day rule.
    any_day_of_month: bool
    any_weekday: bool

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_month_day = day.day in self.days_of_month
        by_weekday = day.weekday() in self.weekdays
        if self.any_day_of_month or self.any_weekday:
            # A day field written `*` or `*/n`: both fields must hold (Vixie cron).
            return by_month_day and by_weekday
        return by_month_day or by_weekday  # both restricted: either (crontab(5))


def parse_cron(text: str) -> CronExpression:
    """The expression, or ValueError naming the field and what is wrong with it."""
    if len(text) > MAX_LENGTH:
        raise ValueError(f"a cron expression has at most {MAX_LENGTH} characters")
    expanded = SHORTHANDS.get(text.strip().lower(), text)
    if expanded.strip().startswith("@"):
        raise ValueError(f"unknown shorthand; use one of {', '.join(SHORTHANDS)}")
    parts = expanded.split()
    if len(parts) != 5:
        raise ValueError(
            "a cron expression has five fields: minute hour day-of-month month day-of-week "
            f"(e.g. '0 9 * * mon'), not {len(parts)}"
        )
    values = [_values(part, spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset((d - 1) % 7 for d in values[4])  # cron 0/7 Sunday -> Python 6
    return CronExpression(
        text=" ".join(parts),
        minutes=tuple(sorted(values[0])),
        hours=tuple(sorted(values[1])),
        days_of_month=frozenset(values[2]),
        months=frozenset(values[3]),
        weekdays=weekdays,
        # Vixie cron's rule: a day field starting with `*` (`*`, `*/2`) does not restrict
        # the day for the either-day rule below.
        any_day_of_month=parts[2].startswith("*"),
        any_weekday=parts[4].startswith("*"),
    )


def _values(part: str, spec: _Field) -> set[int]:
    found: set[int] = set()
    for item in part.split(","):
        found |= _item(item, spec)
    return found


def _item(item: str, spec: _Field) -> set[int]:
    where = f"{spec.name} {item!r}"
    body, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) < 1:
            raise ValueError(f"{where}: a step is a whole number from 1")
        step = int(step_text)
    if body == "*":
        low, high = spec.low, spec.high
        if spec.name == "day of week":
            high = 6  # */2 over Sunday..Saturday, 7 would repeat Sunday
    else:
        first, dash, last = body.partition("-")
        low = _number(first, spec, where)
        high = _number(last, spec, where) if dash else (spec.high if slash else low)
        if high < low:
            raise ValueError(f"{where}: a range runs from low to high")
    return set(range(low, high + 1, step))


def _number(text: str, spec: _Field, where: str) -> int:
    lowered = text.lower()
    if lowered in spec.names:
        return spec.names.index(lowered) + spec.first_name
    if not text.isdigit():
        names = f" or a name ({', '.join(spec.names)})" if spec.names else ""
        raise ValueError(f"{where}: expected a number from {spec.low} to {spec.high}{names}")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise ValueError(f"{where}: {value} is outside {spec.low}-{spec.high}")
    return value
