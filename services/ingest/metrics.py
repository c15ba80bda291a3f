"""Ingest's metrics: HTTP, labelled by route template (never by a path holding an id), and the
AMQP ingress by outcome."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import LATENCY_BUCKETS

REQUESTS = Counter(
    "roac_ingest_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "roac_ingest_http_request_duration_seconds",
    "Time to answer an HTTP request (for /v1/ writes: including RabbitMQ's confirm).",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_ACCEPTED = Counter(
    "roac_ingest_events_accepted_total",
    "Events accepted (confirmed by RabbitMQ) by type and integration (API key name).",
    ["type", "integration"],
)
REQUESTS_REJECTED = Counter(
    "roac_ingest_requests_rejected_total",
    "Requests refused before anything was published, by reason.",
    ["reason"],
)
INGRESS_MESSAGES = Counter(
    "roac_ingest_ingress_messages_total",
    "Messages from the AMQP ingress (roac.ingress) by outcome: accepted (events confirmed), "
    "parked (invalid, in roac.ingest.ingress.dlq with x-roac-reason) or requeued (RabbitMQ did "
    "not confirm; tried again).",
    ["outcome"],
)


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            REQUESTS.labels(method, template, str(status)).inc()
            REQUEST_SECONDS.labels(method, template).observe(time.perf_counter() - started)
