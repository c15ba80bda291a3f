"""How delivery failures are classified and how long to wait before the next attempt."""

from __future__ import annotations

import random
from datetime import datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_SECONDS = 3600.0
# Transient by RFC 9110 and provider practice: timeouts, too early, throttled, server trouble.
TRANSIENT_STATUSES = frozenset({408, 425, 429})


def http_status_is_transient(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def retry_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds before attempt `attempt + 1`: base x 3^(attempt-1), capped, +-20% jitter, and
    never sooner than the provider's Retry-After. With base 5 s and cap 10 min, eight attempts
    span about 30 minutes."""
    rng = rng or random.Random()
    exponential = min(cap, base * 3 ** max(0, attempt - 1))
    delay = exponential * rng.uniform(0.8, 1.2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return float(delay)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds, from delta-seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())
