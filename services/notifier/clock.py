"""Time, passed in: the notifier's schedule (quiet hours, retries, pacing, expiry, "did you
meet?") is tested by moving a clock, not by waiting.

The clocks are shared/clock.py's: in-process tests give the notifier a fake one
(tests/support/clock.py); a test driving the notifier as a process moves it with
`ROAC_CLOCK_OFFSET_FILE` (tests only: expiry of asks and links, when check-ins go).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from shared.clock import OffsetFileClock, SystemClock, parse_offset
from shared.clock import clock_from_setting as _clock_from_setting

__all__ = ["Clock", "OffsetFileClock", "SystemClock", "clock_from_setting", "parse_offset"]


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


def clock_from_setting(offset_file: str) -> Clock:
    """The system clock, or (ROAC_CLOCK_OFFSET_FILE set) one a test moves."""
    return _clock_from_setting(offset_file, "notifier")
