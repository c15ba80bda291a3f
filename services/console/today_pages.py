"""The console's Today page: this week's introductions by state, the acceptance and "we met"
rates, the next scheduled rounds and parked deliveries; charts of introductions per week and of
both rates over the last 12 weeks, of every pool together or of one (`/?pool=NAME`), and a
table of each pool's 12 weeks.

Three calls in parallel: the notifier's weekly counts (with the same per round), the matcher's
pools and its rounds of those weeks (which pool each round was of), the notifier's parked
deliveries. The arithmetic is services/console/activity.py's, the SVG charts.py's."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from services.console import activity, charts
from services.console.pool_pages import schedule_text
from services.console.web import Signed, console, render

today_pages = APIRouter(include_in_schema=False)
WEEKS = 12


@today_pages.get("/")
async def today(
    request: Request, session: Signed, pool: Annotated[str, Query(max_length=64)] = ""
) -> Response:
    apis = console(request).apis
    # Rounds from a week before the first week shown: their introductions may come later.
    since = datetime.combine(date.today(), time(), UTC) - timedelta(weeks=WEEKS + 1)
    weekly, pools, parked, rounds = await asyncio.gather(
        apis.weekly(WEEKS),
        apis.pools(),
        apis.deliveries("parked", None, limit=5),
        apis.rounds_since(since),
    )
    all_weeks = weekly["weeks"]
    by_pool = activity.per_pool(
        all_weeks, weekly.get("rounds", []), {str(r["id"]): r["pool"] for r in rounds}
    )
    summaries = activity.pool_summaries((p["name"] for p in pools), by_pool)
    shown = next((s["pool"] for s in summaries if s["pool"] == pool), "")
    weeks = by_pool.get(shown, [{"week": w["week"]} for w in all_weeks]) if shown else all_weeks
    of = f", pool {shown}" if shown else ""
    acceptance, met = activity.acceptance_rate(weeks), activity.met_rate(weeks)
    scheduled = sorted(
        (p for p in pools if p.get("next_round_at")), key=lambda p: p["next_round_at"]
    )[:5]
    for each in scheduled:
        each["schedule_text"] = schedule_text(each)
    overall = activity.totals(weeks)
    return render(
        request,
        "today.html.j2",
        session,
        title="Today",
        section="today",
        shown=shown,
        this_week=weeks[-1] if weeks else {},
        states=activity.STATES,
        acceptance=acceptance[-1] if acceptance else None,
        overall=overall,
        overall_acceptance=activity.acceptance_rate([overall])[0],
        overall_met=activity.met_rate([overall])[0],
        weeks=weeks,
        rates=acceptance,
        met_rates=met,
        summaries=summaries,
        weeks_chart=charts.intros_per_week(weeks, of),
        rate_chart=charts.rates_per_week(weeks, acceptance, met, of),
        scheduled=scheduled,
        parked=parked["deliveries"],
        parked_count=parked["counts"]["parked"],
        failed_count=parked["counts"]["failed"],
    )
