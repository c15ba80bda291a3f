"""The pages of a check-in's links ("did you meet?"): a GET shows what the button will do (mail
scanners that open links must not answer for people), the button POSTs; after *we met* the page
that follows offers an optional 1 to 5 rating, a form that POSTs to its own signed link.
Rendered from `templates/<language>/checkin.page.html.j2` in the person's language
(services/notifier/link_pages.py); the routes are routes.py's `/links/{token}`, which hands
check-in links here."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse

from services.notifier import link_pages
from services.notifier.checkin_service import CheckinResult, CheckIns, Result
from services.notifier.checkins import Reply, Verdict
from services.notifier.links import LinkAction, LinkClaim

TEMPLATE = "checkin.page.html.j2"

# The page a link shows before its button is pressed, by the link's action (the template's keys).
CONFIRM = {
    LinkAction.CHECKIN_MET: "confirm_met",
    LinkAction.CHECKIN_NOT_YET: "confirm_not_yet",
    LinkAction.CHECKIN_DIDNT_HAPPEN: "confirm_didnt_happen",
    LinkAction.CHECKIN_NOT_FOR_ME: "confirm_not_for_me",
    LinkAction.CHECKIN_RATE: "confirm_rate",
}
NOTED = {reply: f"noted_{reply.value}" for reply in Reply}
# Everything else a click can end in: status and page.
OTHER: dict[str, tuple[int, str]] = {
    Verdict.REPEATED: (200, "repeated"),
    Verdict.CLOSED: (200, "closed"),
    Verdict.EXPIRED: (410, "expired"),
    Verdict.INVALID: (400, "invalid"),
    Result.INVALID: (400, "invalid"),
    Result.EXPIRED: (410, "expired"),
    # True whatever was asked, and it says nothing about erasure.
    Result.ERASED: (200, "erased"),
}


def page_key(result: CheckinResult) -> tuple[int, str]:
    """The status and page (a key of the template's `texts`) of what a click did."""
    if result.outcome in (Verdict.NOTED, Verdict.ASK_AGAIN) and result.reply is not None:
        return 200, NOTED[result.reply]
    return OTHER.get(result.outcome, OTHER[Result.INVALID])


def _page(
    status: int,
    language: str,
    key: str,
    *,
    action: str = "",
    rate_action: str | None = None,
) -> HTMLResponse:
    html = link_pages.render(TEMPLATE, language, key, action=action, rate_action=rate_action)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _path(url: str | None) -> str | None:
    """The rating link's path: the form posts to the page's own origin."""
    if url is None:
        return None
    return "/links/" + url.rsplit("/links/", 1)[1]


def result_page(result: CheckinResult, language: str) -> HTMLResponse:
    status, key = page_key(result)
    # After "we met" (or a repeated click on it) without a rating yet: the rating form.
    rate = _path(result.rate_url) if key in (NOTED[Reply.MET], "repeated") else None
    return _page(status, language, key, rate_action=rate)


async def _language(token: str, request: Request) -> str:
    languages = getattr(request.app.state, "page_languages", None)
    return await link_pages.page_language(languages, token, request.headers.get("accept-language"))


async def confirm(checkins: CheckIns, token: str, request: Request) -> HTMLResponse:
    language = await _language(token, request)
    found = await checkins.inspect(token)
    if isinstance(found, CheckinResult):
        return result_page(found, language)
    claim: LinkClaim = found
    path = str(request.url.path)
    if claim.action is LinkAction.CHECKIN_RATE:
        return _page(200, language, CONFIRM[claim.action], rate_action=path)
    return _page(200, language, CONFIRM[claim.action], action=path)


async def answer(checkins: CheckIns, token: str, request: Request) -> HTMLResponse:
    language = await _language(token, request)
    rating = None
    body = (await request.body()).decode("utf-8", "replace")
    given = parse_qs(body).get("rating", [])
    if given:
        try:
            rating = int(given[0])
        except ValueError:
            rating = 0  # refused by the lifecycle: not 1 to 5
    result = await checkins.answer(token, rating)
    if result.reply is Reply.MET and result.rate_url is None and result.outcome == Verdict.NOTED:
        return _page(200, language, "rated")
    return result_page(result, language)
