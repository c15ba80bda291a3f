"""Pacing per destination (a webhook URL, a Slack channel): plain Python, clock passed in.

Virtual scheduling (GCRA): each destination has the earliest time its next message may leave.
A message that can leave within `max_wait` reserves its slot and is told how long to sleep; one
that would wait longer reserves nothing and is rescheduled through a delay queue instead.
Providers that announce their limits (Discord's headers) push the next slot further out.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    rate_per_second: float
    _next_free: dict[str, float] = field(default_factory=dict)

    def reserve(self, key: str, now: float, max_wait: float) -> float | None:
        """Seconds to wait before sending (and the slot is taken), or None if over `max_wait`."""
        slot = max(now, self._next_free.get(key, now))
        wait = slot - now
        if wait > max_wait:
            return None
        self._next_free[key] = slot + 1.0 / self.rate_per_second
        return wait

    def next_free_in(self, key: str, now: float) -> float:
        return max(0.0, self._next_free.get(key, now) - now)

    def hold_until(self, key: str, when: float) -> None:
        """The provider said: nothing more before `when`."""
        self._next_free[key] = max(self._next_free.get(key, when), when)
