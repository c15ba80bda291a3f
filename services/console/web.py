"""What every console page shares: the signed-in operator, CSRF checks, form parsing, rendering
with the security headers, and the answers to errors (sign in first, a refused form, a service
that failed).

Forms are plain `application/x-www-form-urlencoded` POSTs (no script needed). Every form holds
the session's CSRF token and every POST is checked against it (`checked_form`); the sign-in and
set-password forms, which come before a session, hold a token paired with a short-lived signed
cookie instead. The session cookie is HttpOnly and SameSite=Strict (Secure with
ROAC_CONSOLE_COOKIE_SECURE)."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode
from uuid import UUID, uuid4

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from services.console.accounts import Accounts, Session
from services.console.clients import ApiError, Apis
from services.console.cookies import SESSION_COOKIE, SIGNIN_COOKIE, CookieSigner
from services.console.metrics import ACTIONS, API_FAILURES

MAX_FORM_BYTES = 64 * 1024
SIGNIN_TOKEN_SECONDS = 3600
# Sent with every page: nothing from elsewhere, no framing, no inline script at all.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

# Notices shown after an action (the redirect carries a code, never free text).
NOTICES = {
    "pool-saved": "The pool is saved.",
    "paused": "Pause requested: the person gets no introduction until the day shown, whatever "
    "the integration sends (effective in a few seconds).",
    "resumed": "Resume requested: the person can be introduced again (effective in a few seconds).",
    "opted-out": "Opt-out requested: the person gets no more messages (effective in a few "
    "seconds).",
    "erased": "Erasure requested: everything that identifies the person is being deleted.",
    "blocked": "The pairing is blocked: the two are never introduced to each other again.",
    "unmerged": "The merge is undone: the identities it brought are a person of their own again.",
    "retried": "The parked deliveries were queued again.",
    "resource-shared": "The resource is shared: its deliveries start within seconds.",
    "password-set": "Your password is set: sign in with it.",
    "signed-out": "You are signed out.",
}


def _date(value: Any, with_time: bool = True) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC" if with_time else "%Y-%m-%d")
    return str(value)


def _person_url(source: str, external_id: str) -> str:
    return "/person?" + urlencode({"source": source, "id": external_id})


templates = Environment(
    loader=PackageLoader("services.console", "templates"),
    autoescape=select_autoescape(["html", "j2"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["when"] = _date
templates.filters["day"] = lambda v: _date(v, with_time=False)
templates.globals["person_url"] = _person_url


class SignInNeeded(Exception):
    """No valid session: the answer is the sign-in page (then back here)."""


class FormRefused(Exception):
    """A POST without the right CSRF token, or not a form."""


@dataclass
class Console:
    """What the routes use, kept on app.state."""

    accounts: Accounts
    apis: Apis
    signer: CookieSigner
    session_seconds: float
    secure_cookies: bool
    base_url: str


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def current_session(request: Request) -> Session:
    """The signed-in operator's session, or SignInNeeded."""
    c = console(request)
    payload = c.signer.verify("session", request.cookies.get(SESSION_COOKIE))
    if payload is None:
        raise SignInNeeded
    try:
        session_id = UUID(payload)
    except ValueError:
        raise SignInNeeded from None
    session = await c.accounts.session(session_id)
    if session is None:
        raise SignInNeeded
    return session


Signed = Annotated[Session, Depends(current_session)]


def correlation(action: str) -> str:
    """The correlation id an action's API calls carry (their logs and events name it)."""
    return f"console-{action}-{uuid4()}"


async def audit(
    request: Request,
    session: Session,
    action: str,
    target: str,
    outcome: str,
    detail: str = "",
    people: Sequence[str] = (),
) -> None:
    """Record an action in the audit list with who did it and the people it mentions
    (`source/external_id`, for the erasure sweep), and count it."""
    ACTIONS.labels(action, outcome).inc()
    await console(request).accounts.record(
        session.operator, action, target, outcome, detail, people
    )


def split_list(text: str) -> list[str]:
    """A comma- or line-separated field's values, trimmed, empty ones left out."""
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


async def read_form(request: Request) -> dict[str, str]:
    """The request's urlencoded form, first value of each field."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormRefused("This form must be sent by a browser from the console's own page.")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise FormRefused("This form is too large.")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise FormRefused("This form is not UTF-8.") from None
    return {key: values[0] for key, values in parsed.items()}


async def form_values(request: Request, name: str) -> list[str]:
    """Every value of one field of a form already read (ticked checkboxes)."""
    parsed = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=False)
    return parsed.get(name, [])


def same_token(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


async def checked_form(request: Request, session: Session) -> dict[str, str]:
    """The form of a POST, after its CSRF token matched the session's."""
    form = await read_form(request)
    if not same_token(session.csrf_token, form.get("csrf_token")):
        raise FormRefused(
            "This form was refused: its security token is missing or wrong (CSRF check). "
            "Open the page again and resend it."
        )
    return form


def with_signin_token(request: Request, page: Callable[[str], Response]) -> Response:
    """A page with a form shown before any session (sign-in, set password): `page` renders it
    with a fresh token, which is paired with a short-lived signed cookie (`signin_token_ok`
    checks the pair)."""
    c = console(request)
    token = secrets.token_urlsafe(24)
    response = page(token)
    response.set_cookie(
        SIGNIN_COOKIE,
        c.signer.sign("signin", token, int(time.time()) + SIGNIN_TOKEN_SECONDS),
        max_age=SIGNIN_TOKEN_SECONDS,
        httponly=True,
        samesite="strict",
        secure=c.secure_cookies,
        path="/",
    )
    return response


def signin_token_ok(request: Request, form: dict[str, str]) -> bool:
    paired = console(request).signer.verify("signin", request.cookies.get(SIGNIN_COOKIE))
    return paired is not None and same_token(paired, form.get("csrf_token"))


def render(
    request: Request,
    template: str,
    session: Session | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    html = templates.get_template(template).render(
        operator=session.operator if session else None,
        csrf=session.csrf_token if session else "",
        notice=notice,
        **context,
    )
    return HTMLResponse(html, status_code=status)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str:
    """Only a path of this console (never `//elsewhere` or a full URL)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def sign_in_needed(request: Request, _exc: Exception) -> Response:
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response: Response = redirect("/sign-in?" + urlencode({"next": target}))
    else:
        response = render(
            request,
            "message.html.j2",
            None,
            status=401,
            title="Sign in again",
            message="Your session has ended; nothing was done. Sign in and try again.",
        )
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def form_refused(request: Request, exc: Exception) -> Response:
    return render(request, "message.html.j2", None, status=403, title="Refused", message=str(exc))


async def api_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    API_FAILURES.labels(exc.service, str(exc.status)).inc()
    status = 404 if exc.status == 404 else 502
    title = "Not found" if status == 404 else f"The {exc.service} did not answer as expected"
    return render(
        request,
        "message.html.j2",
        None,
        status=status,
        title=title,
        message=f"{exc.service} answered {exc.status}: {exc.detail}",
    )
