"""The console's Prometheus metrics: requests by route template (never a raw path, which would
carry people's ids), method and status, their latency, sign-ins by outcome and actions by kind
and outcome; the API calls' failures by service; the audit erasure sweep's forgotten and
unanswered people (counts only: a metric never names a person)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "roac_console_requests_total",
    "Console HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "roac_console_request_seconds",
    "Console HTTP request latency by route template (page rendering and its API calls).",
    ["route"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SIGN_INS = Counter(
    "roac_console_sign_ins_total",
    "Sign-in attempts by outcome (ok, refused, throttled).",
    ["outcome"],
)
ACTIONS = Counter(
    "roac_console_actions_total",
    "Operators' actions (pool saved, round requested, person paused ...) by outcome.",
    ["action", "outcome"],
)
API_FAILURES = Counter(
    "roac_console_api_failures_total",
    "Calls from the console to a service's API that failed, by service and status.",
    ["service", "status"],
)

AUDIT_PEOPLE_FORGOTTEN = Counter(
    "roac_console_audit_people_forgotten_total",
    "People the audit list named whom the matcher no longer knows (erased through the API): "
    "every mention of them replaced by the erasure sweep.",
)
AUDIT_PEOPLE_UNANSWERED = Counter(
    "roac_console_audit_people_unanswered_total",
    "People the erasure sweep could not get an answer about from the matcher (not reachable, "
    "5xx, refused): left as they are and asked about again next sweep.",
)


class RequestMetrics:
    """Pure ASGI middleware: counts and times every HTTP request under its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUESTS.labels(template, scope.get("method", ""), str(status)).inc()
            REQUEST_SECONDS.labels(template).observe(time.perf_counter() - started)
