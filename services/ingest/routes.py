"""Ingest's HTTP routes: parse, call the intake, answer. No decisions here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.ingest.intake import Intake, correlation_id_from
from services.ingest.schemas import (
    Accepted,
    ContactBatch,
    ContactsBody,
    InterestBatch,
    InterestsBody,
    Problem,
)

# Declares the scheme in the OpenAPI document; the check itself is ApiKeyMiddleware.
_bearer = HTTPBearer(auto_error=False, description="An API key from ROAC_API_KEYS")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}, "description": text}
    for status, text in {
        400: "Malformed JSON",
        401: "Missing or invalid API key",
        413: "Body too large",
        422: "Invalid fields (every one listed); nothing was published",
        503: "RabbitMQ did not confirm; nothing was accepted, retry",
    }.items()
}

api = APIRouter(prefix="/v1", tags=["ingest"], responses=_PROBLEMS)
ops = APIRouter(tags=["operations"])


def _intake(request: Request) -> Intake:
    intake: Intake = request.app.state.intake
    return intake


def _context(request: Request, response: Response) -> tuple[str, str]:
    correlation_id = correlation_id_from(request.headers.get("x-correlation-id"))
    response.headers["X-Correlation-ID"] = correlation_id
    return correlation_id, request.state.integration


@api.post("/contacts", status_code=202, response_model=Accepted, summary="Upsert people")
async def post_contacts(
    body: ContactsBody, request: Request, response: Response, _: Credentials
) -> Accepted:
    """One person, or `{"items": [...]}` of up to 1,000. Answered once RabbitMQ confirmed them."""
    correlation_id, integration = _context(request, response)
    items = body.items if isinstance(body, ContactBatch) else [body]
    return await _intake(request).accept_contacts(
        items, correlation_id=correlation_id, integration=integration
    )


@api.post("/interests", status_code=202, response_model=Accepted, summary="Declare interests")
async def post_interests(
    body: InterestsBody, request: Request, response: Response, _: Credentials
) -> Accepted:
    """One interest (`likes`, `seeks` or `offers` a topic), or `{"items": [...]}` of up to 1,000."""
    correlation_id, integration = _context(request, response)
    items = body.items if isinstance(body, InterestBatch) else [body]
    return await _intake(request).accept_interests(
        items, correlation_id=correlation_id, integration=integration
    )


@ops.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops.get("/readyz", summary="RabbitMQ and PostgreSQL are reachable", responses={503: {}})
async def readyz(request: Request, response: Response) -> dict[str, Any]:
    checks: dict[str, bool] = await request.app.state.readiness()
    ready = all(checks.values())
    response.status_code = 200 if ready else 503
    return {"status": "ready" if ready else "not ready", "checks": checks}


@ops.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
