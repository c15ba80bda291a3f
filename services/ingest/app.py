"""Wiring of the ingest process: FastAPI app, middlewares, broker and pool in its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from services.ingest import subscriptions
from services.ingest.access_routes import access_api
from services.ingest.amqp_ingress import Ingress
from services.ingest.idempotency import InvalidKey
from services.ingest.key_admin import keys_api
from services.ingest.metrics import REQUESTS_REJECTED, HttpMetricsMiddleware
from services.ingest.person_access import PersonAccess, ServiceUrls
from services.ingest.publishing import (
    IdempotencyConflict,
    IdempotencyInProgress,
    Intake,
    PublishFailed,
)
from services.ingest.routes import api
from services.ingest.store import IngestStore
from shared import problems
from shared.api_keys import ApiKeyMiddleware, ApiKeyring
from shared.authorization import Forbidden, forbidden_problem
from shared.body_limit import BodySizeLimitMiddleware
from shared.broker import EventPublisher, make_broker
from shared.coalescing import CoalescingPublisher
from shared.consumer import TRANSIENT_ERRORS
from shared.db import DatabaseCheck
from shared.http_app import http_app
from shared.logs import configure_logging
from shared.metrics import watch_pool
from shared.ops import router as ops_router
from shared.runtime import (
    ConsumerCheck,
    cancel_all,
    close_pool,
    open_pool,
    retry_until_ready,
    serve,
)
from shared.settings import Settings
from shared.shutdown import ShutdownSteps
from shared.topology import declare_topology

log = logging.getLogger("roac.ingest")
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def connected_lifespan(settings: Settings) -> Lifespan:
    """Open the pool and the broker, declare the topology, consume the AMQP ingress, and expose
    the intake."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await open_pool(settings)
        watch_pool("ingest", pool)
        # The prefetch bounds the ingress messages handled at once; HTTP publishing ignores it.
        broker = make_broker(settings, service="ingest", prefetch=settings.consumer_prefetch)
        # Requests in flight at the same moment share a message (and a confirm): RabbitMQ's
        # cost is per message. Each request's events still travel together, all or nothing.
        publisher = CoalescingPublisher(EventPublisher(broker, "ingest").publish)
        subscriptions.register(
            broker,
            Ingress(
                publisher,
                subscriptions.QueueParker(broker, roac_user=settings.amqp_user),
                max_body_bytes=settings.ingest_max_body_bytes,
                max_interests_per_person=settings.ingest_max_interests_per_person,
                # A sender named like an API key writes only that key's sources.
                grant_named=app.state.keyring.grant_named,
                keys_loaded=lambda: app.state.keyring.loaded,
                bound_only=settings.ingress_require_key,
            ),
            roac_user=settings.amqp_user,
        )
        await retry_until_ready("RabbitMQ", broker.connect)
        await declare_topology(broker)
        await broker.start()

        consumers_present = ConsumerCheck(broker, settings.amqp_url)
        database_answers = DatabaseCheck(settings.database_url)

        async def readiness() -> dict[str, bool]:
            broker_ok = await broker.ping(timeout=2.0)
            consuming = broker_ok and await consumers_present()
            return {
                "broker": broker_ok,
                "consumers": consuming,
                "database": await database_answers(),
            }

        keys = IngestStore(pool)
        app.state.intake = Intake(publisher, keys)
        # The right of access asks the matcher and the notifier (with the caller's key).
        services_client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0))
        app.state.person_access = PersonAccess(
            services_client, ServiceUrls(**settings.service_api_urls)
        )
        app.state.readiness = readiness
        cleanup = asyncio.create_task(_forget_old_keys(keys), name="idempotency-cleanup")
        log.info("roac ingest started")
        try:
            yield
        finally:
            steps = ShutdownSteps("roac ingest", budget_seconds=settings.shutdown_timeout_seconds)
            await steps.step("idempotency cleanup", cancel_all([cleanup]), within=5)
            # Stops consuming the ingress and waits for its in-flight messages (graceful_timeout).
            budget = settings.shutdown_timeout_seconds
            await steps.step("ingress consumer and broker", broker.stop(), within=budget)
            await steps.step("consumer check connection", consumers_present.close(), within=2)
            await steps.step("database check connection", database_answers.close(), within=2)
            await steps.step("database pool", close_pool(pool), within=5)
            await steps.step("services client", services_client.aclose(), within=2)
            steps.finish()
            app.state.clean_shutdown = steps.clean

    return lifespan


async def _forget_old_keys(keys: IngestStore) -> None:
    """Idempotency keys are kept 24 hours; the older ones are deleted every few minutes."""
    while True:
        with contextlib.suppress(Exception):
            await keys.forget_old()
        await asyncio.sleep(300)


async def _idempotency_conflict(_request: Request, exc: Exception) -> JSONResponse:
    REQUESTS_REJECTED.labels("idempotency_conflict").inc()
    if isinstance(exc, IdempotencyInProgress):
        return problems.problem_response(
            409,
            "Request in progress",
            "A request with this Idempotency-Key is being handled; retry in a moment.",
            headers={"Retry-After": "1"},
        )
    return problems.problem_response(
        409,
        "Idempotency-Key reused",
        "This Idempotency-Key was used for a different request; use a new key for a new request.",
    )


async def _invalid_key(_request: Request, exc: Exception) -> JSONResponse:
    return problems.problem_response(400, "Invalid Idempotency-Key", str(exc))


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


def create_app(
    settings: Settings, lifespan: Lifespan | None = None, keyring: ApiKeyring | None = None
) -> FastAPI:
    """The ingest app; by default its keyring is ROAC_API_KEYS plus the database's keys."""
    app = http_app(
        title="roac ingest",
        version="1",
        summary="Push people and their interests into roac.",
        lifespan=lifespan or connected_lifespan(settings),
    )
    # Read by the interests route (services/ingest/batch_triage.py applies it).
    app.state.max_interests_per_person = settings.ingest_max_interests_per_person
    app.state.database_url = settings.database_url  # the keys:admin routes open their own
    # Idempotency fingerprints are HMACs under the server's erasure key (they hash people's ids).
    app.state.fingerprint_key = settings.erasure_key_bytes
    app.include_router(api)
    app.include_router(access_api)
    app.include_router(keys_api)
    app.include_router(ops_router)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, problems.http_problem)
    app.add_exception_handler(PublishFailed, _publish_failed)
    app.add_exception_handler(IdempotencyConflict, _idempotency_conflict)
    app.add_exception_handler(IdempotencyInProgress, _idempotency_conflict)
    app.add_exception_handler(InvalidKey, _invalid_key)
    app.add_exception_handler(Forbidden, forbidden_problem)
    # The database or RabbitMQ unreachable (the idempotency store's claim during a PostgreSQL
    # restart, a pool timeout): 503 with Retry-After, never 500.
    problems.answer_unavailable(app, TRANSIENT_ERRORS)
    # Added innermost first: metrics see every answer, auth runs before the body is read.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.ingest_max_body_bytes)
    app.state.keyring = keyring or ApiKeyring.from_settings(settings)
    app.add_middleware(ApiKeyMiddleware, keyring=app.state.keyring)
    app.add_middleware(HttpMetricsMiddleware)
    return app


async def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    # No key at all is allowed (`roac keys create` adds them while ingest runs); the keyring
    # warns about it at start.
    await serve(create_app(settings), host=settings.ingest_host, port=settings.ingest_port)
