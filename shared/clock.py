"""The wall clock the services read, and the one a test moves: `ROAC_CLOCK_OFFSET_FILE`.

In-process tests give a service a fake clock (tests/support/clock.py). A test driving services
as processes cannot, so `ROAC_CLOCK_OFFSET_FILE` names a file holding a number of seconds added
to the system's wall clock, read again whenever the file changes: the end-to-end test of
check-ins moves the notifier past a check-in's delay (tests/e2e/test_checkins.py), the one of
pauses moves the matcher and the notifier past a two-week pause (tests/e2e/test_pause_ends.py).
For tests only: whoever can write that file moves the service's time, and the service logs a
warning at start. Monotonic time and sleeps stay the system's, so timeouts and pacing are
untouched; what the database computes with its own now() (a week's introductions counted for
the weekly cap) is not moved either.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger("roac.clock")


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def parse_offset(text: str) -> float:
    """The offset a clock file holds: seconds, a finite number; anything else counts as 0 (a
    half-written file must not throw the clock years away)."""
    try:
        offset = float(text.strip() or "0")
    except ValueError:
        return 0.0
    return offset if math.isfinite(offset) and abs(offset) < 100 * 365 * 86400 else 0.0


class OffsetFileClock(SystemClock):
    """The system clock plus the seconds in `path` (ROAC_CLOCK_OFFSET_FILE), re-read when the
    file's modification time or size changes; a missing file counts as 0."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen: tuple[int, int] | None = None
        self._offset = timedelta(0)

    def offset(self) -> timedelta:
        try:
            stat = os.stat(self._path)
        except OSError:
            self._seen, self._offset = None, timedelta(0)
            return self._offset
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            try:
                text = self._path.read_text()
            except OSError:
                text = ""
            self._seen, self._offset = seen, timedelta(seconds=parse_offset(text))
        return self._offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset()


def clock_from_setting(offset_file: str, service: str = "roac") -> SystemClock:
    """The system clock, or (ROAC_CLOCK_OFFSET_FILE set) one a test moves."""
    if not offset_file:
        return SystemClock()
    log.warning(
        "ROAC_CLOCK_OFFSET_FILE is set: the %s's clock is moved by %s", service, offset_file
    )
    return OffsetFileClock(Path(offset_file))
