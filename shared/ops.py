"""The operations endpoints of a consumer service: /metrics, /healthz and /readyz.

Served by FastStream's ASGI app on the service's metrics port. /readyz answers 200 only when
the broker answers a ping, every subscriber is consuming and the database answers a query.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.asgi import AsgiResponse, get
from faststream.asgi.types import ASGIApp, Scope
from prometheus_client import make_asgi_app

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def ops_routes(readiness: ReadinessCheck) -> list[tuple[str, ASGIApp]]:
    @get(include_in_schema=False)
    async def healthz(scope: Scope) -> AsgiResponse:
        return AsgiResponse(b'{"status":"ok"}', 200, {"content-type": "application/json"})

    @get(include_in_schema=False)
    async def readyz(scope: Scope) -> AsgiResponse:
        checks = await readiness()
        ready = all(checks.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
        return AsgiResponse(
            json.dumps(body).encode(), 200 if ready else 503, {"content-type": "application/json"}
        )

    return [("/healthz", healthz), ("/readyz", readyz), ("/metrics", make_asgi_app())]
