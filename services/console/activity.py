"""What the Today page tells from the notifier's weekly counts (`GET /v1/intros/weekly`), as
plain Python without I/O: the acceptance and "we met" rates per week, totals over the weeks,
and the counts of each pool, from the counts per round and the matcher's rounds (which pool
each round was of).

- Acceptance rate: of the introductions whose asks were answered or expired, the share everyone
  said yes to (accepted or introduced); None when none was decided yet.
- "We met" rate: of the introductions someone answered a "did you meet?" check-in about, the
  share someone said "we met" to; None when no check-in was answered yet (a check-in goes a
  week after the introduction, so the newest weeks have none)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

STATES = ("asked", "accepted", "introduced", "declined", "expired", "failed")
COUNTED = ("total", *STATES, "answered", "met")
# Where introductions of no round go (live matching), and those of a round no longer listed.
LIVE = "live matches"
OTHER = "other rounds"


def acceptance_rate(weeks: Sequence[Mapping[str, Any]]) -> list[float | None]:
    rates: list[float | None] = []
    for w in weeks:
        yes = int(w.get("accepted", 0)) + int(w.get("introduced", 0))
        decided = yes + int(w.get("declined", 0)) + int(w.get("expired", 0))
        rates.append(yes / decided if decided else None)
    return rates


def met_rate(weeks: Sequence[Mapping[str, Any]]) -> list[float | None]:
    rates: list[float | None] = []
    for w in weeks:
        answered = int(w.get("answered", 0))
        rates.append(int(w.get("met", 0)) / answered if answered else None)
    return rates


def totals(weeks: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Every count summed over the weeks."""
    summed = dict.fromkeys(COUNTED, 0)
    for w in weeks:
        for key in COUNTED:
            summed[key] += int(w.get(key, 0))
    return summed


def per_pool(
    weeks: Sequence[Mapping[str, Any]],
    by_round: Iterable[Mapping[str, Any]],
    pool_of_round: Mapping[str, str],
) -> dict[str, list[dict[str, Any]]]:
    """Each pool's weeks (the same weeks as `weeks`, empty ones too) from the counts per round:
    a round's introductions count for its pool, those of no round for LIVE, those of a round
    not in `pool_of_round` for OTHER."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for row in by_round:
        round_id = row.get("round")
        pool = LIVE if round_id is None else pool_of_round.get(str(round_id), OTHER)
        week = str(row["week"])
        counts = found.setdefault(pool, {}).setdefault(week, dict.fromkeys(COUNTED, 0))
        for key in COUNTED:
            counts[key] += int(row.get(key, 0))
    return {
        pool: [
            {"week": w["week"], **by_week.get(str(w["week"]), dict.fromkeys(COUNTED, 0))}
            for w in weeks
        ]
        for pool, by_week in found.items()
    }


def pool_summaries(
    pool_names: Iterable[str], weeks_of: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """One row per pool (every pool named, then LIVE and OTHER when they have any): its counts
    over the weeks and both rates."""
    names = list(dict.fromkeys([*pool_names, *sorted(weeks_of)]))
    rows = []
    for name in names:
        summed = totals(weeks_of.get(name, []))
        rows.append(
            {
                "pool": name,
                "listed": name not in (LIVE, OTHER),
                **summed,
                "acceptance": acceptance_rate([summed])[0],
                "met_rate": met_rate([summed])[0],
            }
        )
    return rows
