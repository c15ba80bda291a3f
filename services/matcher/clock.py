"""Time, passed in: when a pool's scheduled round comes due, the time a round plans at, and
whether a person's pause has ended for live matching are read from a clock the use cases are
given, so a test moves a fake clock across a daylight-saving change instead of waiting for one
(tests/integration/test_rounds.py), and an end-to-end test moves the running matcher past a
two-week pause with `ROAC_CLOCK_OFFSET_FILE` (tests only; shared/clock.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from shared.clock import SystemClock
from shared.clock import clock_from_setting as _clock_from_setting

__all__ = ["Clock", "SystemClock", "clock_from_setting"]


class Clock(Protocol):
    def now(self) -> datetime: ...


def clock_from_setting(offset_file: str) -> Clock:
    """The system clock, or (ROAC_CLOCK_OFFSET_FILE set) one a test moves."""
    return _clock_from_setting(offset_file, "matcher")
