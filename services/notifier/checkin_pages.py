"""The pages of a check-in's links ("did you meet?"): a GET shows what the button will do (mail
scanners that open links must not answer for people), the button POSTs; after *we met* the page
that follows offers an optional 1 to 5 rating, a form that POSTs to its own signed link.
Rendered from `templates/en/checkin.page.html.j2`; the routes are routes.py's `/links/{token}`,
which hands check-in links here."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader

from services.notifier.checkin_service import CheckinResult, CheckIns, Result
from services.notifier.checkins import Reply, Verdict
from services.notifier.links import LinkAction, LinkClaim

_pages = Environment(loader=PackageLoader("services.notifier", "templates/en"), autoescape=True)

_CONFIRM = {
    LinkAction.CHECKIN_MET: (
        "You met?",
        "Wonderful. Telling us helps us make better introductions.",
        "Yes, we met",
    ),
    LinkAction.CHECKIN_NOT_YET: (
        "Not yet?",
        "No problem: we will ask you once more, later.",
        "Not yet",
    ),
    LinkAction.CHECKIN_DIDNT_HAPPEN: (
        "It didn't happen?",
        "Thanks for telling us. Nobody is told what you answered.",
        "It didn't happen",
    ),
    LinkAction.CHECKIN_NOT_FOR_ME: (
        "Not for you?",
        "We will never introduce you to each other again. Nobody is told.",
        "Not for me",
    ),
    LinkAction.CHECKIN_RATE: ("How was it?", "One click: 1 (not great) to 5 (great).", None),
}
_NOTED = {
    Reply.MET: ("Thank you!", "Glad you met."),
    Reply.NOT_YET: ("Noted", "We will ask you once more, later."),
    Reply.DIDNT_HAPPEN: ("Thank you", "Noted: it didn't happen. No harm done."),
    Reply.NOT_FOR_ME: ("Understood", "We will never introduce you to each other again."),
}
_OTHER: dict[str, tuple[int, str, str]] = {
    Verdict.REPEATED: (200, "Already noted", "We have your answer; nothing more to do."),
    Verdict.CLOSED: (200, "Already answered", "We keep the first answer; thank you."),
    Verdict.EXPIRED: (410, "This link has expired", "It was a while ago. No harm done."),
    Verdict.INVALID: (400, "This link does not work", "It may be incomplete: copy the whole link."),
    Result.INVALID: (400, "This link does not work", "It may be incomplete: copy the whole link."),
    Result.EXPIRED: (410, "This link has expired", "It was a while ago. No harm done."),
    # True whatever was asked, and it says nothing about erasure.
    Result.ERASED: (200, "Nothing more to do", "You will receive no more messages from us."),
}


def _page(
    status: int,
    title: str,
    message: str,
    *,
    button: str | None = None,
    action: str = "",
    rate_action: str | None = None,
) -> HTMLResponse:
    html = _pages.get_template("checkin.page.html.j2").render(
        title=title, message=message, button=button, action=action, rate_action=rate_action
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _path(url: str | None) -> str | None:
    """The rating link's path: the form posts to the page's own origin."""
    if url is None:
        return None
    return "/links/" + url.rsplit("/links/", 1)[1]


def result_page(result: CheckinResult) -> HTMLResponse:
    if result.outcome in (Verdict.NOTED, Verdict.ASK_AGAIN) and result.reply is not None:
        title, message = _NOTED[result.reply]
        return _page(200, title, message, rate_action=_path(result.rate_url))
    status, title, message = _OTHER.get(result.outcome, _OTHER[Result.INVALID])
    if result.outcome == Verdict.REPEATED and result.rate_url is not None:
        return _page(status, title, message, rate_action=_path(result.rate_url))
    return _page(status, title, message)


async def confirm(checkins: CheckIns, token: str, request: Request) -> HTMLResponse:
    found = await checkins.inspect(token)
    if isinstance(found, CheckinResult):
        return result_page(found)
    claim: LinkClaim = found
    title, message, button = _CONFIRM[claim.action]
    path = str(request.url.path)
    if claim.action is LinkAction.CHECKIN_RATE:
        return _page(200, title, message, rate_action=path)
    return _page(200, title, message, button=button, action=path)


async def answer(checkins: CheckIns, token: str, request: Request) -> HTMLResponse:
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
        return _page(200, "Thank you!", "Noted, with your rating.")
    return result_page(result)
