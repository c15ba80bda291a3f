"""Wiring of the console process (`roac console`, ROAC_CONSOLE_HOST:ROAC_CONSOLE_PORT): a
server-rendered web app for operators. It owns only operator accounts, sessions and the audit
list (schema `console`); everything else it shows or does goes through the matcher's,
notifier's and ingest's HTTP APIs with ROAC_CONSOLE_API_KEY, so the services still meet only
through their contracts. A background sweep asks the matcher which people named in the audit
list it no longer knows and forgets them there (services/console/erasure_sweep.py). /healthz,
/readyz (the database answers) and /metrics as every service; JSON logs with
ROAC_LOG_FORMAT=json."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from fastapi import FastAPI, Request, Response

from services.console.accounts import Accounts
from services.console.clients import ApiError, Apis
from services.console.cookies import CookieSigner
from services.console.delivery_pages import delivery_pages
from services.console.erasure_sweep import AuditErasureSweep, asking_the_matcher
from services.console.metrics import RequestMetrics
from services.console.people_pages import people_pages
from services.console.pool_pages import pool_pages
from services.console.resource_pages import resource_pages
from services.console.signin_pages import signin_pages
from services.console.today_pages import today_pages
from services.console.web import (
    SECURITY_HEADERS,
    Console,
    FormRefused,
    SignInNeeded,
    api_failed,
    form_refused,
    sign_in_needed,
)
from shared.body_limit import BodySizeLimitMiddleware
from shared.db import DatabaseCheck
from shared.http_app import http_app
from shared.logs import configure_logging
from shared.metrics import watch_pool
from shared.ops import router as ops_router
from shared.runtime import close_pool, open_pool, serve
from shared.settings import Settings

log = logging.getLogger("roac.console")
BODY_LIMIT_BYTES = 64 * 1024


def require_secrets(settings: Settings) -> tuple[bytes, str]:
    key = settings.console_session_key.get_secret_value()
    if not key:
        raise SystemExit(
            "ROAC_CONSOLE_SESSION_KEY must be set: it signs the console's session cookies. "
            "`roac secrets generate` makes one; `roac up` generates one for development."
        )
    api_key = settings.console_api_key.get_secret_value()
    if not api_key:
        raise SystemExit(
            "ROAC_CONSOLE_API_KEY must be set: the console acts only through the services' APIs. "
            "Create a key with the scopes in docs/console.md (roac keys create console ...)."
        )
    return key.encode(), api_key


async def build(settings: Settings) -> FastAPI:
    session_key, api_key = require_secrets(settings)
    pool = await open_pool(settings, max_size=min(settings.database_pool_size, 5))
    watch_pool("console", pool)
    apis = Apis(settings.console_api_urls, api_key)
    database_answers = DatabaseCheck(settings.database_url)

    accounts = Accounts(pool, timedelta(hours=settings.console_session_hours))
    erasure_sweep = AuditErasureSweep(
        accounts, asking_the_matcher(apis), interval=settings.console_erasure_sweep_seconds
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info("roac console started on %s", settings.console_base_url)
        # People erased through the API are forgotten by the audit list too (no event reaches
        # the console: it asks the matcher).
        sweeping = asyncio.create_task(erasure_sweep.run_forever(), name="audit-erasure-sweep")
        try:
            yield
        finally:
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping
            await apis.close()
            await database_answers.close()
            await close_pool(pool)

    async def readiness() -> dict[str, bool]:
        return {"database": await database_answers()}

    app = http_app(title="roac console", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.readiness = readiness
    app.state.console = Console(
        accounts=accounts,
        apis=apis,
        signer=CookieSigner(session_key),
        session_seconds=settings.console_session_hours * 3600,
        secure_cookies=settings.console_cookie_secure,
        base_url=settings.console_base_url,
    )
    app.include_router(ops_router)
    # The pages, by what they serve: each module's routes are thin (the APIs' clients and
    # services/console/web.py do the rest).
    for pages in (
        signin_pages,
        today_pages,
        pool_pages,
        people_pages,
        resource_pages,
        delivery_pages,
    ):
        app.include_router(pages)
    app.add_exception_handler(SignInNeeded, sign_in_needed)
    app.add_exception_handler(FormRefused, form_refused)
    app.add_exception_handler(ApiError, api_failed)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            if name == "Cache-Control" and "cache-control" in response.headers:
                continue
            response.headers.setdefault(name, value)
        return response

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=BODY_LIMIT_BYTES)
    app.add_middleware(RequestMetrics)
    return app


async def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    app = await build(settings)
    await serve(app, host=settings.console_host, port=settings.console_port)
