"""A person's preferences page on the notifier's public port: `/preferences/<token>`, linked
from the footer of every message to one person (a fresh token in each, valid 30 days).

Server-rendered (Jinja2 templates `prefs*.html.j2`, in the person's language), usable without
JavaScript. A GET only shows the page; each form POSTs to the same signed URL, so the POST
carries the token (the person's secret: another site cannot forge the request without it),
and a successful POST answers 303 back to the page (reloading sends nothing twice). The pages
are never cached, never framed, and send no referrer (the token is in the URL).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, Environment, PackageLoader

from services.notifier.link_pages import page_responses
from services.notifier.preference_changes import Person, PreferenceChanges, Refusal
from services.notifier.preferences import (
    LANGUAGES,
    PAUSE_WEEKS,
    cap_choices,
    effective_order,
    long_date,
    month_cap_choices,
)
from services.notifier.preferences import page_language as choose_language
from shared.events import InterestKind, in_preferred_order

MAX_FORM_BYTES = 4096

router = APIRouter(
    tags=["preferences"],
    responses=page_responses(
        {
            400: "Not a preferences link roac made, or a form that is not one of the page's",
            410: "The link expired (the page says how to get a fresh one)",
        }
    ),
)

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}
_STATUS = {Refusal.INVALID: 400, Refusal.EXPIRED: 410, Refusal.ERASED: 200}
# Where each refused field's message links to (the id of its first control).
_ANCHORS = {
    "pause": "until",
    "per_week": "per_week",
    "per_month": "per_month",
    "language": "language",
    "channel_order": "channel_1",
    "topic": "topic",
    "kind": "kind",
    "interest_action": "topic",
}


def _environment(language: str) -> Environment:
    loaders = [PackageLoader("services.notifier", f"templates/{language}")]
    if language != "en":
        loaders.append(PackageLoader("services.notifier", "templates/en"))
    env = Environment(loader=ChoiceLoader(loaders), autoescape=True)
    env.filters["long_date"] = lambda moment: long_date(moment, language)
    return env


_ENVIRONMENTS = {language: _environment(language) for language in LANGUAGES}


def _render(language: str, name: str, status: int, **context: Any) -> HTMLResponse:
    html = _ENVIRONMENTS[language].get_template(name).render(lang=language, **context)
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _changes(request: Request) -> PreferenceChanges:
    changes: PreferenceChanges = request.app.state.preferences
    return changes


def _refused(request: Request, refusal: Refusal) -> HTMLResponse:
    language = choose_language(None, request.headers.get("accept-language"))
    return _render(language, "prefs_notice.html.j2", _STATUS[refusal], notice=refusal.value)


def _page(
    request: Request,
    person: Person,
    *,
    status: int = 200,
    saved: bool = False,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    changes = _changes(request)
    current = person.current
    now = changes.now()
    language = choose_language(current.language, request.headers.get("accept-language"))
    held = person.held
    return _render(
        language,
        "prefs.html.j2",
        status,
        action=str(request.url.path),
        current=current,
        paused=current.paused(now),
        saved=saved,
        errors=errors or {},
        form=form or {},
        weeks=PAUSE_WEEKS,
        caps=cap_choices(changes.operator_cap),
        month_caps=month_cap_choices(changes.operator_cap),
        operator_cap=changes.operator_cap,
        # None: the matcher could not be asked; the page says so and shows the rest.
        channels=in_preferred_order(held.channels, current.channel_order) if held else None,
        channel_order=effective_order(held.channel_types, current.channel_order) if held else [],
        interests=person.interests,
        interests_known=held is not None,
        kinds=list(InterestKind),
        anchors=_ANCHORS,
        languages=LANGUAGES,
        chosen_language=current.language or language,
        min_date=(now + timedelta(days=1)).date().isoformat(),
        max_date=(now + timedelta(days=365)).date().isoformat(),
    )


async def _form(request: Request) -> dict[str, str] | None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if kind != "application/x-www-form-urlencoded" or len(body) > MAX_FORM_BYTES:
        return None
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None
    return {key: values[0] for key, values in parsed.items()}


@router.get("/preferences/{token}", response_class=HTMLResponse, summary="A person's preferences")
async def show(token: str, request: Request) -> HTMLResponse:
    person = await _changes(request).read(token)
    if isinstance(person, Refusal):
        return _refused(request, person)
    return _page(request, person, saved=request.query_params.get("saved") == "1")


@router.post(
    "/preferences/{token}",
    response_class=HTMLResponse,
    summary="Change a person's preferences",
    responses=page_responses(
        {
            303: "Saved: back to the page",
            422: "A choice refused: the page again, each refused field saying why",
        }
    ),
)
async def change(token: str, request: Request) -> Response:
    form = await _form(request)
    if form is None:
        return _refused(request, Refusal.INVALID)
    result = await _changes(request).change(token, form)
    if isinstance(result, Refusal):
        return _refused(request, result)
    person, decision = result
    if decision.errors:
        return _page(request, person, status=422, errors=decision.errors, form=form)
    return RedirectResponse(f"{request.url.path}?saved=1", status_code=303, headers=_HEADERS)
