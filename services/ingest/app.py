"""Wiring of the ingest process: FastAPI app, middlewares, broker and pool in its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from services.ingest.intake import Intake, PublishFailed
from services.ingest.metrics import REQUESTS_REJECTED, HttpMetricsMiddleware
from services.ingest.routes import api
from shared import problems
from shared.api_keys import ApiKeyMiddleware, ApiKeyring
from shared.body_limit import BodySizeLimitMiddleware
from shared.broker import EventPublisher, make_broker
from shared.db import ping
from shared.logs import configure_logging
from shared.metrics import watch_pool
from shared.ops import router as ops_router
from shared.runtime import open_pool, retry_until_ready, serve
from shared.settings import Settings
from shared.topology import declare_topology

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def connected_lifespan(settings: Settings) -> Lifespan:
    """Open the pool and the broker, declare the topology, and expose the intake."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await open_pool(settings)
        watch_pool("ingest", pool)
        broker = make_broker(settings, service="ingest")
        await retry_until_ready("RabbitMQ", broker.connect)
        await declare_topology(broker)
        await broker.start()

        async def readiness() -> dict[str, bool]:
            return {"broker": await broker.ping(timeout=2.0), "database": await ping(pool)}

        app.state.intake = Intake(EventPublisher(broker, "ingest"))
        app.state.readiness = readiness
        try:
            yield
        finally:
            await broker.stop()
            await pool.close()

    return lifespan


async def _publish_failed(_request: Request, exc: Exception) -> JSONResponse:
    REQUESTS_REJECTED.labels("broker_unavailable").inc()
    return problems.problem_response(
        503,
        "Unavailable",
        "RabbitMQ did not confirm the events; nothing was accepted. Retry the request.",
        headers={"Retry-After": "1"},
    )


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    REQUESTS_REJECTED.labels("invalid").inc()
    return await problems.validation_problem(request, exc)


def create_app(settings: Settings, lifespan: Lifespan | None = None) -> FastAPI:
    app = FastAPI(
        title="roac ingest",
        version="1",
        summary="Push people and their interests into roac.",
        lifespan=lifespan or connected_lifespan(settings),
    )
    app.include_router(api)
    app.include_router(ops_router)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, problems.http_problem)
    app.add_exception_handler(PublishFailed, _publish_failed)
    # Added innermost first: metrics see every answer, auth runs before the body is read.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.ingest_max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keyring=ApiKeyring(settings.api_key_secrets))
    app.add_middleware(HttpMetricsMiddleware)
    return app


async def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    if not settings.api_key_secrets:
        raise SystemExit(
            "ROAC_API_KEYS is empty: ingest would refuse every request. Set name:secret pairs."
        )
    await serve(create_app(settings), host=settings.ingest_host, port=settings.ingest_port)
