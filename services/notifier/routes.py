"""The notifier's public HTTP routes: the links people click, and introductions and resource
deliveries for operators.

A GET on a link only shows a page with a button (mail scanners that prefetch links must not
answer for people); the button POSTs. RFC 8058 one-click unsubscribe POSTs directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from services.notifier import checkin_pages, link_pages
from services.notifier.activity import Activity
from services.notifier.answers import AnswerResult, Answers, Outcome
from services.notifier.checkin_service import CheckIns
from services.notifier.links import LinkAction
from services.notifier.optin import IntroState
from services.notifier.store.uow import NotifierStore
from shared.authorization import requires
from shared.person_path import ExternalIdPath, SourcePath
from shared.problems import AUTH_PROBLEMS, BODY_PROBLEMS, problem_responses
from shared.scopes import Scope
from shared.text_safety import kept_correlation_id

# What a click can end in besides its page (checkin_pages.py answers the same statuses).
links = APIRouter(
    tags=["links"],
    responses=link_pages.page_responses(
        {
            400: "Not a link roac made (a token cut short, or for another page)",
            410: "The link expired",
        }
    ),
)
api = APIRouter(
    prefix="/v1",
    tags=["introductions"],
    responses=problem_responses(
        {**AUTH_PROBLEMS, **BODY_PROBLEMS, 404: "No such path, or a person's id it cannot hold"}
    ),
)

# The page a link shows before its button is pressed, and what an answer did: keys of the
# template's `texts` (templates/<language>/page.html.j2, in the person's language:
# services/notifier/link_pages.py).
_CONFIRM = {
    LinkAction.ACCEPT: "confirm_accept",
    LinkAction.DECLINE: "confirm_decline",
    LinkAction.UNSUBSCRIBE: "confirm_unsubscribe",
}
_RESULT = {
    Outcome.ACCEPTED: (200, "accepted"),
    Outcome.DECLINED: (200, "declined"),
    Outcome.UNSUBSCRIBED: (200, "unsubscribed"),
    Outcome.REPEATED: (200, "repeated"),
    Outcome.CLOSED: (200, "closed"),
    Outcome.EXPIRED: (410, "expired"),
    Outcome.INVALID: (400, "invalid"),
    # An erased person's link: true whatever the action, and it says nothing about erasure.
    Outcome.ERASED: (200, "erased"),
}


def _page(status: int, language: str, key: str, action: str = "") -> HTMLResponse:
    html = link_pages.render("page.html.j2", language, key, action=action)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _answers(request: Request) -> Answers:
    answers: Answers = request.app.state.answers
    return answers


async def _language(token: str, request: Request) -> str:
    languages = getattr(request.app.state, "page_languages", None)
    return await link_pages.page_language(languages, token, request.headers.get("accept-language"))


def _result_page(result: AnswerResult, language: str) -> HTMLResponse:
    status, key = _RESULT[result.outcome]
    if result.outcome is Outcome.ACCEPTED and result.state is IntroState.ACCEPTED:
        key = "accepted_all"
    return _page(status, language, key)


@links.get("/links/{token}", response_class=HTMLResponse, summary="Confirm an answer")
async def confirm(token: str, request: Request) -> HTMLResponse:
    checkins: CheckIns | None = getattr(request.app.state, "checkins", None)
    if checkins is not None and checkins.owns(token):  # "did you meet?": checkin_pages.py
        return await checkin_pages.confirm(checkins, token, request)
    language = await _language(token, request)
    claim = await _answers(request).inspect(token)
    if isinstance(claim, AnswerResult):
        return _result_page(claim, language)
    if claim.action not in _CONFIRM:  # a preferences link is not answered here
        return _result_page(AnswerResult(Outcome.INVALID), language)
    return _page(200, language, _CONFIRM[claim.action], action=str(request.url.path))


@links.post(
    "/links/{token}", response_class=HTMLResponse, summary="Answer (accept, decline, unsubscribe)"
)
async def answer(token: str, request: Request) -> HTMLResponse:
    checkins: CheckIns | None = getattr(request.app.state, "checkins", None)
    if checkins is not None and checkins.owns(token):
        return await checkin_pages.answer(checkins, token, request)
    language = await _language(token, request)
    return _result_page(await _answers(request).answer(token), language)


@api.get(
    "/intros",
    summary="Introductions and where each stands",
    dependencies=[requires(Scope.INTROS_READ)],
)
async def list_intros(
    request: Request,
    state: Annotated[
        str | None, Query(pattern="^(asked|accepted|introduced|declined|expired|failed)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[datetime | None, Query(description="created_at of the last one seen")] = None,
    round_id: Annotated[
        UUID | None, Query(alias="round", description="Only the introductions of this round")
    ] = None,
) -> dict[str, Any]:
    store: NotifierStore = request.app.state.store
    async with store.unit_of_work() as uow:
        intros = await uow.intros.listing(
            state=state, limit=limit, before=before, round_id=round_id
        )
    return {"intros": intros}


@api.get(
    "/resources/deliveries",
    summary="Where a resource's deliveries stand, per recipient",
    tags=["resources"],
    dependencies=[requires(Scope.RESOURCES_READ)],
)
async def resource_deliveries(
    request: Request,
    resource: Annotated[UUID, Query(description="The resource's id (POST /v1/resources)")],
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> dict[str, Any]:
    store: NotifierStore = request.app.state.store
    async with store.unit_of_work() as uow:
        deliveries = await uow.resources.deliveries(resource, limit)
    return {"resource": resource, "deliveries": deliveries}


# For operators (the console): weekly counts, a person's introductions, deliveries that need a
# look, and their retry (services/notifier/activity.py).


def _activity(request: Request) -> Activity:
    activity: Activity = request.app.state.activity
    return activity


@api.get(
    "/intros/weekly",
    summary="Introductions per week (Monday to Sunday, UTC) by the state each is in now, with "
    "their check-ins answered and 'we met' (optionally per round)",
    dependencies=[requires(Scope.INTROS_READ)],
)
async def intros_weekly(
    request: Request,
    weeks: Annotated[int, Query(ge=1, le=104, description="This week and the ones before")] = 12,
    by_round: Annotated[
        bool, Query(description="Also the counts per round (`rounds`; null: live matches)")
    ] = False,
) -> dict[str, Any]:
    """Each week: `total`, a count per state, `answered` (introductions someone answered a
    check-in about: we met, didn't happen, not for me, or not yet twice) and `met` (those
    someone said "we met" to)."""
    return await _activity(request).weekly(weeks, by_round=by_round)


@api.get(
    # `:person_id` (shared/person_path.py): an id may hold a slash, even a line break (refused).
    "/contacts/{source}/{external_id:person_id}/intros",
    summary="A person's introductions, newest first, with every participant's answer",
    dependencies=[requires(Scope.INTROS_READ)],
)
async def person_intros(
    source: SourcePath,
    external_id: ExternalIdPath,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[datetime | None, Query(description="created_at of the last one seen")] = None,
    before_id: Annotated[
        UUID | None,
        Query(
            description="With `before`: the id of the last one seen, so introductions created "
            "at the same instant are neither skipped nor repeated across pages"
        ),
    ] = None,
) -> dict[str, Any]:
    intros = await _activity(request).person_intros(source, external_id, limit, before, before_id)
    return {"intros": intros}


@api.get(
    "/deliveries",
    summary="Deliveries parked (out of attempts) or failed (refused for good), with the reason",
    tags=["deliveries"],
    dependencies=[requires(Scope.INTROS_READ)],
)
async def list_deliveries(
    request: Request,
    status: Annotated[str, Query(pattern="^(parked|failed)$")] = "parked",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[datetime | None, Query(description="updated_at of the last one seen")] = None,
) -> dict[str, Any]:
    activity = _activity(request)
    return {
        "deliveries": await activity.deliveries(status, limit, before),
        "counts": await activity.counts(),
    }


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deliveries: list[UUID] | None = Field(
        default=None, max_length=1000, description="These parked deliveries; null: every one"
    )


@api.post(
    "/deliveries/retry",
    summary="Retry parked deliveries with a fresh budget of attempts",
    tags=["deliveries"],
    dependencies=[requires(Scope.INTROS_WRITE)],
)
async def retry_deliveries(body: RetryIn, request: Request) -> dict[str, Any]:
    correlation = kept_correlation_id(request.headers.get("x-correlation-id"))
    retried = await _activity(request).retry(
        body.deliveries, correlation or f"deliveries-retry-{uuid4()}"
    )
    return {"retried": retried}
