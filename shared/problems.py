"""Errors as RFC 9457 problem details (`application/problem+json`), naming every bad field;
a dependency that is down (database, broker) answers 503 with Retry-After, never 500."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from shared.text_safety import escaped


class FieldProblem(BaseModel):
    field: str = Field(
        description="Where in the body, e.g. `items[3].kind`; empty for the body itself."
    )
    pointer: str = Field(description="The same place as a JSON pointer, e.g. `#/items/3/kind`.")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem detail (`application/problem+json`)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] = Field(default_factory=list)


PROBLEM_JSON = "application/problem+json"
_TYPES = {
    400: "malformed-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "request-too-large",
    422: "invalid-request",
    503: "unavailable",
}
_UNION_TAGS = {"single", "batch"}


def problem_response(
    status: int,
    title: str,
    detail: str,
    errors: Sequence[FieldProblem] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=f"https://roac.example.org/problems/{_TYPES.get(status, 'error')}",
        title=title,
        status=status,
        detail=detail,
        errors=list(errors),
    )
    return JSONResponse(
        body.model_dump(), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


# Seconds a client is asked to wait when a dependency is down (the pool retries meanwhile).
UNAVAILABLE_RETRY_AFTER_SECONDS = 2


async def unavailable_problem(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After for a request that failed because the database or the broker is
    unreachable (a restart, an outage, an exhausted pool): an integration then knows to retry,
    which it cannot tell from a 500."""
    logging.getLogger("roac.http").warning(
        "%s %s: a dependency is unavailable, answered 503: %r",
        request.method,
        request.url.path,
        exc,
    )
    return problem_response(
        503,
        "Unavailable",
        "The database or the broker is not available right now. Retry the request (with the "
        "same Idempotency-Key, if it had one).",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
    )


def answer_unavailable(app: FastAPI, errors: Iterable[type[BaseException]]) -> None:
    """Register `unavailable_problem` for every error that means a dependency is unreachable
    (the consumers' `TRANSIENT_ERRORS`: connection refused or reset, asyncpg's connection and
    interface errors, CannotConnectNow, TooManyConnections, a pool acquire timeout, ...)."""
    for error in errors:
        if issubclass(error, Exception):
            app.add_exception_handler(error, unavailable_problem)


def _location(loc: Sequence[Any]) -> tuple[str, str]:
    # A key of the body may be the sender's text (an unknown field): control and bidirectional
    # formatting characters in it are shown as \uXXXX (shared/text_safety.py).
    parts = [escaped(p) if isinstance(p, str) else p for p in loc if p != "body"]
    # Drop the tag pydantic adds for the single-or-batch union.
    if parts and parts[0] in _UNION_TAGS:
        parts = parts[1:]
    field = ""
    for part in parts:
        if isinstance(part, int):
            field += f"[{part}]"
        else:
            field += f".{part}" if field else str(part)
    pointer = "#/" + "/".join(str(p) for p in parts) if parts else "#"
    return field, pointer


def field_problems(errors: Sequence[Any]) -> list[FieldProblem]:
    found = []
    for error in errors:
        field, pointer = _location(error.get("loc", ()))
        # A message may quote the sender's text (a UUID's "found `\u202e` at 18"): shown as
        # \uXXXX, like a field name, so a refused character never comes back raw.
        message = escaped(str(error.get("msg", "is invalid")))
        if error.get("type") == "missing":
            message = "is required"
        found.append(FieldProblem(field=field, pointer=pointer, message=message))
    return found


async def validation_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(400, "Malformed JSON", "The request body is not valid JSON.")
    problems = field_problems(errors)
    noun = "field is" if len(problems) == 1 else "fields are"
    return problem_response(
        422,
        "Invalid request",
        f"{len(problems)} {noun} invalid; nothing was accepted.",
        problems,
    )


async def http_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return problem_response(
        exc.status_code,
        str(exc.detail) if exc.status_code < 500 else "Unavailable",
        str(exc.detail),
        headers=dict(exc.headers) if exc.headers else None,
    )


def problem_responses(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for problem documents: `{status: description}` as a route's or a
    router's `responses=`, so the documents say which errors each operation can answer."""
    return {
        status: {
            "model": Problem,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            "description": text,
        }
        for status, text in described.items()
    }


# The errors every route with a JSON body can answer.
BODY_PROBLEMS = {
    400: "Malformed JSON",
    413: "Body too large",
    422: "Invalid fields (every one listed)",
}
# The errors every API-key route can answer.
AUTH_PROBLEMS = {
    401: "Missing or invalid API key",
    403: "The API key lacks the route's scope, or may not touch the person's source",
    503: "A dependency (database, broker, API keys) is not available yet; retry",
}
