"""The console's pages before a session: sign in, sign out, and choose a password from the
one-time link `roac operators create EMAIL` prints; and the stylesheet every page links to.

The sign-in and set-password forms come before any session, so their CSRF token is paired with a
short-lived signed cookie (`web.with_signin_token`); sign-ins are rate-limited by
`Accounts.sign_in` and counted in `roac_console_sign_ins_total`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.console.accounts import SignInRefused, password_problem
from services.console.cookies import SESSION_COOKIE, SIGNIN_COOKIE
from services.console.metrics import SIGN_INS
from services.console.web import (
    FormRefused,
    Signed,
    audit,
    checked_form,
    client_address,
    console,
    read_form,
    redirect,
    render,
    safe_next,
    signin_token_ok,
    with_signin_token,
)

signin_pages = APIRouter(include_in_schema=False)


@signin_pages.get("/sign-in")
async def sign_in_page(request: Request, next: str = "/") -> Response:
    return with_signin_token(
        request,
        lambda token: render(
            request, "sign_in.html.j2", None, title="Sign in", next=safe_next(next), token=token
        ),
    )


@signin_pages.post("/sign-in")
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


@signin_pages.post("/sign-out")
async def sign_out(request: Request, session: Signed) -> Response:
    await checked_form(request, session)
    await console(request).accounts.sign_out(session.id)
    await audit(request, session, "sign out", "", "ok")
    response = redirect("/sign-in?notice=signed-out")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@signin_pages.get("/set-password")
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


@signin_pages.post("/set-password")
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


@signin_pages.get("/static/console.css")
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
