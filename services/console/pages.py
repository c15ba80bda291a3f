"""The console's pages: thin routes, each fetching its data through the services' APIs
(services/console/clients.py) and recording every action in the audit list with who did it.

Today · Pools · Rounds · People (and a person's page with its confirmed actions) · Resources
(preview who one would reach, share it, see who received it) · Deliveries · Audit, plus
sign-in, sign-out and setting a password from a one-time link."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from services.console import charts
from services.console.accounts import Session, SignInRefused, password_problem
from services.console.clients import ApiError
from services.console.cookies import SESSION_COOKIE, SIGNIN_COOKIE
from services.console.metrics import ACTIONS, SIGN_INS
from services.console.web import (
    FormRefused,
    checked_form,
    client_address,
    console,
    current_session,
    form_values,
    read_form,
    redirect,
    render,
    safe_next,
    signin_token_ok,
    with_signin_token,
)

pages = APIRouter(include_in_schema=False)
Signed = Annotated[Session, Depends(current_session)]
PAUSE_DAYS = 30


def _correlation(action: str) -> str:
    return f"console-{action}-{uuid4()}"


async def _audit(
    request: Request, session: Session, action: str, target: str, outcome: str, detail: str = ""
) -> None:
    ACTIONS.labels(action, outcome).inc()
    await console(request).accounts.record(session.operator, action, target, outcome, detail)


# Sign-in, sign-out, set password


@pages.get("/sign-in")
async def sign_in_page(request: Request, next: str = "/") -> Response:
    return with_signin_token(
        request,
        lambda token: render(
            request, "sign_in.html.j2", None, title="Sign in", next=safe_next(next), token=token
        ),
    )


@pages.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await read_form(request)
    if not signin_token_ok(request, form):
        SIGN_INS.labels("refused").inc()
        raise FormRefused(
            "This sign-in form was refused: its security token is missing or wrong (CSRF "
            "check). Open the sign-in page again."
        )
    c = console(request)
    target = safe_next(form.get("next"))
    try:
        session = await c.accounts.sign_in(
            form.get("email", ""), form.get("password", ""), client_address(request)
        )
    except SignInRefused as refused:
        SIGN_INS.labels("throttled" if refused.throttled else "refused").inc()
        status, message = (429 if refused.throttled else 401), str(refused)
        return with_signin_token(
            request,
            lambda token: render(
                request,
                "sign_in.html.j2",
                None,
                status=status,
                title="Sign in",
                next=target,
                error=message,
                email=form.get("email", ""),
                token=token,
            ),
        )
    SIGN_INS.labels("ok").inc()
    await c.accounts.record(session.operator, "sign in", "", "ok")
    response = redirect(target)
    response.set_cookie(
        SESSION_COOKIE,
        c.signer.sign("session", str(session.id), int(session.expires_at.timestamp())),
        max_age=int(c.session_seconds),
        httponly=True,
        samesite="strict",
        secure=c.secure_cookies,
        path="/",
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    return response


@pages.post("/sign-out")
async def sign_out(request: Request, session: Signed) -> Response:
    await checked_form(request, session)
    await console(request).accounts.sign_out(session.id)
    await _audit(request, session, "sign out", "", "ok")
    response = redirect("/sign-in?notice=signed-out")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@pages.get("/set-password")
async def set_password_page(request: Request, token: str = "") -> Response:
    email = await console(request).accounts.setup_email(token) if token else None
    if email is None:
        return render(
            request,
            "message.html.j2",
            None,
            status=410,
            title="This link does not work",
            message="It was used already or has expired: ask for a new one "
            "(roac operators create EMAIL).",
        )
    return _password_form(request, token, email)


def _password_form(request: Request, token: str, email: str, error: str = "") -> Response:
    return with_signin_token(
        request,
        lambda form_token: render(
            request,
            "set_password.html.j2",
            None,
            status=400 if error else 200,
            title="Choose your password",
            setup=token,
            email=email,
            error=error,
            token=form_token,
        ),
    )


@pages.post("/set-password")
async def set_password(request: Request) -> Response:
    form = await read_form(request)
    if not signin_token_ok(request, form):
        raise FormRefused("This form was refused: its security token is missing or wrong.")
    accounts = console(request).accounts
    token = form.get("setup", "")
    email = await accounts.setup_email(token)
    if email is None:
        return await set_password_page(request, "")
    password = form.get("password", "")
    problem = password_problem(password)
    if problem is None and password != form.get("confirm", ""):
        problem = "The two passwords differ."
    if problem:
        return _password_form(request, token, email, problem)
    await accounts.set_password(token, password)
    await accounts.record(email, "set password", "", "ok")
    return redirect("/sign-in?notice=password-set")


# Today


@pages.get("/")
async def today(request: Request, session: Signed) -> Response:
    apis = console(request).apis
    weeks, pools, parked = await asyncio.gather(
        apis.weekly(12), apis.pools(), apis.deliveries("parked", None, limit=5)
    )
    this_week = weeks[-1] if weeks else {}
    rates = charts.acceptance_rate(weeks)
    scheduled = sorted(
        (p for p in pools if p.get("next_round_at")), key=lambda p: p["next_round_at"]
    )[:5]
    for pool in scheduled:
        pool["schedule_text"] = _schedule_text(pool)
    return render(
        request,
        "today.html.j2",
        session,
        title="Today",
        section="today",
        this_week=this_week,
        states=("asked", "accepted", "introduced", "declined", "expired", "failed"),
        acceptance=rates[-1] if rates else None,
        weeks=weeks,
        rates=rates,
        weeks_chart=charts.intros_per_week(weeks),
        rate_chart=charts.rate_per_week(weeks, rates),
        scheduled=scheduled,
        parked=parked["deliveries"],
        parked_count=parked["counts"]["parked"],
        failed_count=parked["counts"]["failed"],
    )


# Pools


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


UNITS = {"hours": 3600, "days": 86400, "weeks": 7 * 86400}


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = dict(
    zip(
        WEEKDAYS,
        ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays"),
        strict=True,
    )
)


def _schedule_text(pool: dict[str, Any]) -> str:
    """ "Mondays at 09:00 (Europe/Berlin)", "every 2 weeks: ...", "every week", "on request"."""
    schedule = pool.get("schedule")
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
        "checkin_after_days": str(pool.get("checkin_after_days") or ""),
        "existing": True,
    }


def _pool_body(form: dict[str, str], weekdays: list[str] | None = None) -> dict[str, Any]:
    """The matcher's pool body from the form: weekdays ticked make a calendar schedule (the
    matcher checks the time, zone and weeks and names what is wrong), else an interval."""
    schedule: dict[str, Any] | None = None
    if weekdays:
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
            "tags": _split(form.get("tags", "")),
            "sources": _split(form.get("sources", "")),
            "organizations": _split(form.get("organizations", "")),
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


@pages.get("/pools")
async def pools_page(request: Request, session: Signed) -> Response:
    pools = await console(request).apis.pools()
    for pool in pools:
        pool["schedule_text"] = _schedule_text(pool)
    return render(request, "pools.html.j2", session, title="Pools", section="pools", pools=pools)


@pages.get("/pools/edit")
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


@pages.post("/pools")
async def save_pool(request: Request, session: Signed) -> Response:
    form = await checked_form(request, session)
    weekdays = [d for d in WEEKDAYS if d in await form_values(request, "weekday")]
    body = _pool_body(form, weekdays)
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
        await _audit(request, session, "save pool", body["name"], "refused", exc.detail)
        return form_page(error=f"The pool was not saved: {exc.detail}")
    await _audit(request, session, "save pool", body["name"], "ok")
    return redirect("/pools?notice=pool-saved")


# Rounds


@pages.get("/rounds")
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


@pages.post("/rounds")
async def request_round(request: Request, session: Signed) -> Response:
    form = await checked_form(request, session)
    pool = form.get("pool", "")
    dry_run = form.get("mode") != "run"
    action = "dry-run round" if dry_run else "run round"
    try:
        started = await console(request).apis.request_round(pool, dry_run, _correlation("round"))
    except ApiError as exc:
        await _audit(request, session, action, f"pool {pool}", "refused", exc.detail)
        raise
    await _audit(request, session, action, f"pool {pool}", "ok", f"round {started['id']}")
    return redirect(f"/rounds/{started['id']}")


GROUPS_PER_PAGE = 50


@pages.get("/rounds/{round_id}")
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


# People


@pages.get("/people")
async def people_page(
    request: Request,
    session: Signed,
    q: Annotated[str, Query(max_length=200)] = "",
    after: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    page = await console(request).apis.search_people(q, str(after) if after else None)
    next_url = None
    if page.get("next_after"):
        next_url = "/people?" + urlencode({"q": q, "after": page["next_after"]})
    return render(
        request,
        "people.html.j2",
        session,
        title="People",
        section="people",
        q=q,
        people=page["people"],
        next_url=next_url,
    )


@pages.get("/person")
async def person_page(
    request: Request,
    session: Signed,
    source: Annotated[str, Query(max_length=64)],
    id: Annotated[str, Query(max_length=256)],
) -> Response:
    apis = console(request).apis
    profile, identity, intros = await asyncio.gather(
        apis.profile(source, id), apis.identity(source, id), apis.person_intros(source, id)
    )
    paused = bool(
        profile.get("snoozed_until")
        and datetime.fromisoformat(profile["snoozed_until"]) > datetime.now(UTC)
    )
    return render(
        request,
        "person.html.j2",
        session,
        title=profile.get("name") or f"{source}/{id}",
        section="people",
        source=source,
        external_id=id,
        profile=profile,
        identity=identity,
        intros=intros,
        paused=paused,
    )


ACTIONS_ON_PEOPLE = {
    "pause": (
        "Pause",
        f"No new introduction for {PAUSE_DAYS} days: rounds and live matching leave the person "
        "out (with the reason “snoozed”). Introductions already under way go on.",
    ),
    "resume": ("Resume", "The person can be introduced again from now on."),
    "opt-out": (
        "Opt out",
        "The person gets no more asks, introductions or resources, as if they had clicked "
        "unsubscribe; what is pending for them is not sent.",
    ),
    "erase": (
        "Erase",
        "Everything that identifies the person is deleted or scrubbed in every service "
        "(identities, interests, profile, their seats in introductions, pending messages, and "
        "their name in this console's audit list); introductions under way that name them are "
        "cancelled. This cannot be undone.",
    ),
}


@pages.get("/person/confirm")
async def confirm_page(
    request: Request,
    session: Signed,
    source: Annotated[str, Query(max_length=64)],
    id: Annotated[str, Query(max_length=256)],
    action: Annotated[str, Query(pattern="^(pause|resume|opt-out|erase)$")],
) -> Response:
    profile = await console(request).apis.profile(source, id)
    label, effect = ACTIONS_ON_PEOPLE[action]
    name = profile.get("name") or f"{source}/{id}"
    return render(
        request,
        "confirm.html.j2",
        session,
        title=f"{label} {name}?",
        section="people",
        source=source,
        external_id=id,
        action=action,
        label=label,
        effect=effect,
        name=name,
    )


@pages.post("/person/act")
async def act_on_person(request: Request, session: Signed) -> Response:
    form = await checked_form(request, session)
    source, external_id, action = form.get("source", ""), form.get("id", ""), form.get("action")
    if action not in ACTIONS_ON_PEOPLE or form.get("confirmed") != "yes":
        raise FormRefused("Nothing was done: the action was not confirmed.")
    apis = console(request).apis
    accounts = console(request).accounts
    target = f"person {source}/{external_id}"
    correlation = _correlation(action)
    try:
        if action in ("pause", "resume"):
            profile = await apis.profile(source, external_id)
            contact = profile.get("contact_event")
            if not contact:
                raise ApiError("matcher", 409, "No contact event of this identity is known.")
            until = datetime.now(UTC) + timedelta(days=PAUSE_DAYS) if action == "pause" else None
            contact = {**contact, "snoozed_until": until.isoformat() if until else None}
            await apis.upsert_contact(contact, correlation)
        elif action == "opt-out":
            await apis.opt_out(source, external_id, correlation)
        else:
            await apis.erase(source, external_id, correlation)
    except ApiError as exc:
        await _audit(request, session, action, target, "failed", exc.detail)
        raise
    if action == "erase":
        # The audit list keeps that someone was erased, never who.
        await accounts.forget_target(target, "an erased person")
        await _audit(request, session, "erase", "an erased person", "ok", correlation)
        return redirect("/people?notice=erased")
    await _audit(request, session, action, target, "ok", correlation)
    notice = {"pause": "paused", "resume": "resumed", "opt-out": "opted-out"}[action]
    return redirect("/person?" + urlencode({"source": source, "id": external_id, "notice": notice}))


# Deliveries


@pages.get("/deliveries")
async def deliveries_page(
    request: Request,
    session: Signed,
    status: Annotated[str, Query(pattern="^(parked|failed)$")] = "parked",
    before: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    page = await console(request).apis.deliveries(status, before)
    rows = page["deliveries"]
    next_url = None
    if len(rows) == 50:
        next_url = "/deliveries?" + urlencode({"status": status, "before": rows[-1]["updated_at"]})
    return render(
        request,
        "deliveries.html.j2",
        session,
        title="Deliveries",
        section="deliveries",
        shown=status,
        deliveries=rows,
        counts=page["counts"],
        next_url=next_url,
    )


@pages.post("/deliveries/retry")
async def retry_deliveries(request: Request, session: Signed) -> Response:
    form = await checked_form(request, session)
    chosen = form.get("delivery", "")
    try:
        ids = None if chosen == "all" else [UUID(chosen)]
    except ValueError:
        raise FormRefused("No such delivery.") from None
    retried = await console(request).apis.retry_deliveries(ids, _correlation("retry"))
    await _audit(
        request,
        session,
        "retry deliveries",
        "every parked delivery" if ids is None else f"delivery {chosen}",
        "ok",
        f"{len(retried)} queued again",
    )
    return redirect("/deliveries?notice=retried")


# Audit


@pages.get("/audit")
async def audit_page(
    request: Request, session: Signed, before: Annotated[int | None, Query(ge=1)] = None
) -> Response:
    rows = await console(request).accounts.audit(100, before)
    next_url = f"/audit?before={rows[-1]['id']}" if len(rows) == 100 else None
    return render(
        request,
        "audit.html.j2",
        session,
        title="Audit",
        section="audit",
        entries=rows,
        next_url=next_url,
    )


@pages.get("/static/console.css")
async def stylesheet() -> Response:
    return Response(
        STYLESHEET,
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600"},
    )


def _load_stylesheet() -> bytes:
    from importlib import resources

    return resources.files("services.console").joinpath("static/console.css").read_bytes()


STYLESHEET = _load_stylesheet()
