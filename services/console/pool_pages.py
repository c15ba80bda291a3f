"""The console's Pools and Rounds pages: every pool with its schedule, a pool's form (selector,
group size, rules, schedule, serendipity, check-in delay) with a preview of how many people its
selector takes in; rounds newest first, of one pool or all; a dry run's planned groups with
their explanations and everyone left out with the reason; a finished round's statistics and
introductions. Saving a pool and starting a round are recorded in the audit list."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from services.console.clients import ApiError
from services.console.web import (
    Signed,
    audit,
    checked_form,
    console,
    correlation,
    form_values,
    redirect,
    render,
    split_list,
)

pool_pages = APIRouter(include_in_schema=False)


UNITS = {"hours": 3600, "days": 86400, "weeks": 7 * 86400}


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = dict(
    zip(
        WEEKDAYS,
        ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays"),
        strict=True,
    )
)


def schedule_text(pool: dict[str, Any]) -> str:
    """ "Mondays at 09:00 (Europe/Berlin)", "every 2 weeks: ...", "every week", "on request"."""
    schedule = pool.get("schedule")
    if isinstance(schedule, dict) and schedule.get("cron"):
        return f"cron {schedule['cron']} ({schedule.get('timezone')})"
    if isinstance(schedule, dict) and schedule.get("weekdays"):
        days = " and ".join(WEEKDAY_NAMES.get(d, d) for d in schedule["weekdays"])
        text = f"{days} at {schedule.get('at')} ({schedule.get('timezone')})"
        weeks = int(schedule.get("every_weeks", 1))
        return text if weeks == 1 else f"every {weeks} weeks: {text}"
    return _interval_text(pool.get("every_seconds"))


def _interval_text(every_seconds: int | None) -> str:
    if not every_seconds:
        return "on request only"
    for unit, size in (("weeks", UNITS["weeks"]), ("days", UNITS["days"])):
        if every_seconds % size == 0:
            count = every_seconds // size
            return f"every {unit[:-1]}" if count == 1 else f"every {count} {unit}"
    return f"every {every_seconds / 3600:g} hours"


def _pool_form(pool: dict[str, Any] | None) -> dict[str, Any]:
    if pool is None:
        return {
            "name": "",
            "tags": "",
            "sources": "",
            "organizations": "",
            "group_size": "2",
            "serendipity": "0",
            "different_organization": "required",
            "same_timezone": "off",
            "every": "",
            "unit": "weeks",
            "weekdays": [],
            "at": "09:00",
            "timezone": "UTC",
            "every_weeks": "1",
            "cron": "",
            "checkin_after_days": "",
            "existing": False,
        }
    selector = pool.get("selector") or {}
    every, unit = "", "weeks"
    if pool.get("every_seconds"):
        seconds = int(pool["every_seconds"])
        unit = next((u for u in ("weeks", "days") if seconds % UNITS[u] == 0), "hours")
        every = f"{seconds / UNITS[unit]:g}"
    rules = pool.get("rules") or {}
    found = pool.get("schedule")
    schedule: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "name": pool["name"],
        "tags": ", ".join(selector.get("tags", [])),
        "sources": ", ".join(selector.get("sources", [])),
        "organizations": ", ".join(selector.get("organizations", [])),
        "group_size": str(pool.get("group_size", 2)),
        "serendipity": f"{pool.get('serendipity', 0):g}",
        "different_organization": rules.get("different_organization", "required"),
        "same_timezone": rules.get("same_timezone", "off"),
        "every": every,
        "unit": unit,
        "weekdays": list(schedule.get("weekdays", [])),
        "at": schedule.get("at", "09:00"),
        "timezone": schedule.get("timezone", "UTC"),
        "every_weeks": str(schedule.get("every_weeks", 1)),
        "cron": schedule.get("cron", ""),
        "checkin_after_days": str(pool.get("checkin_after_days") or ""),
        "existing": True,
    }


def pool_body(form: dict[str, str], weekdays: list[str] | None = None) -> dict[str, Any]:
    """The matcher's pool body from the form: a cron expression or weekdays ticked make a
    calendar schedule (the matcher checks the expression, time, zone and weeks and names what
    is wrong), else an interval."""
    schedule: dict[str, Any] | None = None
    if form.get("cron", "").strip():
        # A cron expression wins over ticked weekdays (the form says so); the matcher checks it.
        schedule = {"cron": form["cron"].strip(), "timezone": form.get("timezone", "").strip()}
    elif weekdays:
        try:
            every_weeks: Any = int(form.get("every_weeks", "1") or 1)
        except ValueError:
            every_weeks = form.get("every_weeks")
        schedule = {
            "weekdays": weekdays,
            "at": form.get("at", "").strip(),
            "timezone": form.get("timezone", "").strip(),
            "every_weeks": every_weeks,
        }
    every_seconds = None
    if form.get("every", "").strip():
        try:
            every_seconds = round(float(form["every"]) * UNITS.get(form.get("unit", ""), 86400))
        except ValueError:
            every_seconds = -1  # refused by the matcher, with its own message
    try:
        group_size: Any = int(form.get("group_size", "2"))
        serendipity: Any = float(form.get("serendipity", "0") or 0)
    except ValueError:
        group_size, serendipity = form.get("group_size"), form.get("serendipity")
    return {
        "name": form.get("name", "").strip(),
        "selector": {
            "tags": split_list(form.get("tags", "")),
            "sources": split_list(form.get("sources", "")),
            "organizations": split_list(form.get("organizations", "")),
        },
        "group_size": group_size,
        "serendipity": serendipity,
        "rules": {
            "different_organization": form.get("different_organization", "required"),
            "same_timezone": form.get("same_timezone", "off"),
        },
        "every_seconds": None if schedule else every_seconds,
        "schedule": schedule,
        "checkin_after_days": _whole_number(form.get("checkin_after_days", "")),
    }


def _whole_number(text: str) -> Any:
    """None for an empty field, the number, or the text itself for the matcher to refuse."""
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text


@pool_pages.get("/pools")
async def pools_page(request: Request, session: Signed) -> Response:
    pools = await console(request).apis.pools()
    for pool in pools:
        pool["schedule_text"] = schedule_text(pool)
    return render(request, "pools.html.j2", session, title="Pools", section="pools", pools=pools)


@pool_pages.get("/pools/edit")
async def pool_edit_page(request: Request, session: Signed, name: str = "") -> Response:
    pool = None
    if name:
        pool = next((p for p in await console(request).apis.pools() if p["name"] == name), None)
        if pool is None:
            raise ApiError("matcher", 404, f"There is no pool named {name!r}.")
    title = f"Edit pool {name}" if pool else "New pool"
    return render(
        request,
        "pool_form.html.j2",
        session,
        title=title,
        section="pools",
        form=_pool_form(pool),
        preview=None,
    )


@pool_pages.post("/pools")
async def save_pool(request: Request, session: Signed) -> Response:
    form = await checked_form(request, session)
    weekdays = [d for d in WEEKDAYS if d in await form_values(request, "weekday")]
    body = pool_body(form, weekdays)
    apis = console(request).apis
    shown = {
        **_pool_form(None),
        **form,
        "weekdays": weekdays,
        "existing": form.get("existing") == "yes",
    }
    title = f"Edit pool {body['name']}" if shown["existing"] else "New pool"

    def form_page(preview: int | None = None, error: str | None = None) -> Response:
        """The form again, as sent: with the preview's count, or the matcher's refusal."""
        return render(
            request,
            "pool_form.html.j2",
            session,
            status=422 if error else 200,
            title=title,
            section="pools",
            form=shown,
            preview=preview,
            error=error,
        )

    if form.get("do") == "preview":
        try:
            return form_page(preview=await apis.preview_pool(body["selector"]))
        except ApiError as exc:
            if exc.status != 422:
                raise
            return form_page(error=exc.detail)
    try:
        await apis.save_pool(body)
    except ApiError as exc:
        if exc.status != 422:
            raise
        await audit(request, session, "save pool", body["name"], "refused", exc.detail)
        return form_page(error=f"The pool was not saved: {exc.detail}")
    await audit(request, session, "save pool", body["name"], "ok")
    return redirect("/pools?notice=pool-saved")


# Rounds


@pool_pages.get("/rounds")
async def rounds_page(
    request: Request,
    session: Signed,
    pool: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    apis = console(request).apis
    pools, page = await asyncio.gather(apis.pools(), apis.rounds(pool or None, before))
    next_url = None
    if page.get("next_before"):
        next_url = "/rounds?" + urlencode(
            {k: v for k, v in {"pool": pool, "before": page["next_before"]}.items() if v}
        )
    return render(
        request,
        "rounds.html.j2",
        session,
        title="Rounds",
        section="rounds",
        pools=pools,
        pool=pool or "",
        rounds=page["rounds"],
        next_url=next_url,
    )


@pool_pages.post("/rounds")
async def request_round(request: Request, session: Signed) -> Response:
    form = await checked_form(request, session)
    pool = form.get("pool", "")
    dry_run = form.get("mode") != "run"
    action = "dry-run round" if dry_run else "run round"
    try:
        started = await console(request).apis.request_round(pool, dry_run, correlation("round"))
    except ApiError as exc:
        await audit(request, session, action, f"pool {pool}", "refused", exc.detail)
        raise
    await audit(request, session, action, f"pool {pool}", "ok", f"round {started['id']}")
    return redirect(f"/rounds/{started['id']}")


GROUPS_PER_PAGE = 50


@pool_pages.get("/rounds/{round_id}")
async def round_page(
    request: Request,
    session: Signed,
    round_id: UUID,
    groups_from: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    apis = console(request).apis
    found = await apis.round(round_id, groups_from, GROUPS_PER_PAGE)
    plan_size = found.get("plan_size") or 0
    following = groups_from + GROUPS_PER_PAGE
    pages_of_groups = {
        "first": groups_from + 1,
        "last": min(groups_from + GROUPS_PER_PAGE, plan_size),
        "size": plan_size,
        "previous": max(groups_from - GROUPS_PER_PAGE, 0) if groups_from else None,
        "next": following if following < plan_size else None,
    }
    intros: list[dict[str, Any]] = []
    if found["status"] == "done" and not found["dry_run"]:
        intros = await apis.intros(round_id=round_id)
    waiting = found["status"] in ("pending", "running")
    stats = found.get("stats") or {}
    kind = "Dry run" if found["dry_run"] else "Round"
    return render(
        request,
        "round.html.j2",
        session,
        title=f"{kind} of pool {found['pool']}",
        section="rounds",
        round=found,
        stats=stats,
        left_out=stats.get("unplaced_sample") or [],
        plan=found.get("plan") or [],
        groups=pages_of_groups,
        intros=intros,
        refresh=1 if waiting else None,
    )
