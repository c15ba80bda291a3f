"""The operations endpoints every service serves: /healthz, /readyz and /metrics.

/readyz answers 200 only when every check passes: for consumers that means the broker answers,
every subscriber is consuming, and the database answers a query.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Dependencies reachable, consumers consuming", responses={503: {}})
async def readyz(request: Request, response: Response) -> dict[str, Any]:
    readiness: ReadinessCheck = request.app.state.readiness
    checks = await readiness()
    ready = all(checks.values())
    response.status_code = 200 if ready else 503
    return {"status": "ready" if ready else "not ready", "checks": checks}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
