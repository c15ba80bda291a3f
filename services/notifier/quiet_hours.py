"""When a message may reach a person: not between the quiet hours of their local time.

Plain Python with the clock passed in, so it is tested at any hour and across DST changes.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def _zone(name: str | None, fallback: str) -> ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def is_quiet(hour: int, start: int, end: int) -> bool:
    if start == end:
        return False
    if start > end:  # wraps midnight, e.g. 21:00 to 08:00
        return hour >= start or hour < end
    return start <= hour < end


def earliest_delivery(
    now: datetime, timezone: str | None, *, start: int, end: int, fallback_timezone: str = "UTC"
) -> datetime:
    """`now` if the person's local hour is outside [start, end), else the next local `end`:00."""
    zone = _zone(timezone, fallback_timezone)
    local = now.astimezone(zone)
    if not is_quiet(local.hour, start, end):
        return now
    day = local.date()
    if start > end and local.hour >= start:
        day += timedelta(days=1)
    morning = datetime.combine(day, time(end), tzinfo=zone)
    # Round-trip through UTC resolves a morning that a DST change skipped or repeated.
    return max(now, morning.astimezone(UTC))
