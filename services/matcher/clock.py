"""Time, passed in: when a pool's scheduled round comes due (and the time a round plans at) is
read from a clock the rounds use case is given, so a test moves a fake clock across a
daylight-saving change instead of waiting for one (tests/integration/test_rounds.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
