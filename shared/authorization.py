"""Per-route authorisation: each /v1/ route names the one scope it needs, and routes about a
person's source check the key's sources. The API key middleware (shared/api_keys.py) has already
authenticated the request and left its Grant in the request state; what a grant allows is
decided in shared/scopes.py.

A refusal is a 403 problem document naming the missing scope (or the sources the key may not
touch) and is counted per key name, so an operator sees an integration trying what it may not.

`requires` is also what the OpenAPI documents say about security: it is a FastAPI `Security`
dependency on the one bearer scheme below, with its scopes, so every operation it guards states
`security: [{"HTTPBearer": [scope, ...]}]` (OpenAPI 3.1 allows scopes for any scheme type) and no
route declares the scheme or its scope a second time by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.metrics import API_KEY_REFUSALS
from shared.problems import problem_response
from shared.scopes import Grant, Scope


class Forbidden(Exception):
    """The key is valid but may not do this."""

    def __init__(self, grant: Grant, scope: Scope, detail: str) -> None:
        super().__init__(detail)
        self.grant = grant
        self.scope = scope
        self.detail = detail


def grant_of(request: Request) -> Grant:
    grant: Grant | None = getattr(request.state, "grant", None)
    if grant is None:  # the middleware guards every /v1/ route; this is a wiring mistake
        raise RuntimeError("no API key grant on a protected route")
    return grant


# The scheme the documents name; it checks nothing (auto_error=False): ApiKeyMiddleware has
# already answered 401 to a request without a valid key.
API_KEY_SCHEME = HTTPBearer(
    auto_error=False,
    description="An API key: `roac keys create NAME --scope S`, or one of ROAC_API_KEYS (every "
    "scope). An operation's `security` names the scopes it needs; without them: 403.",
)
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(API_KEY_SCHEME)]


def requires(*scopes: Scope) -> Any:
    """A route dependency: 403 unless the request's key has every one of `scopes`; documented
    as the operation's security requirement."""
    if not scopes:
        raise ValueError("requires() names at least one scope")

    def check(request: Request, _credentials: _Credentials) -> Grant:
        grant = grant_of(request)
        for scope in scopes:
            if not grant.allows(scope):
                raise Forbidden(
                    grant,
                    scope,
                    f"The API key {grant.name!r} lacks the scope {scope.value!r}; "
                    f"create a key with `roac keys create NAME --scope {scope.value}`.",
                )
        return grant

    return Security(check, scopes=[scope.value for scope in scopes])


def check_sources(request: Request, scope: Scope, sources: Iterable[str]) -> None:
    """403 unless the request's key may touch every one of `sources` (the people a request
    writes, erases or reads)."""
    grant = grant_of(request)
    foreign = grant.foreign_sources(sources)
    if foreign:
        allowed = ", ".join(sorted(grant.sources or ())) or "none"
        raise Forbidden(
            grant,
            scope,
            f"The API key {grant.name!r} may use the scope {scope.value!r} only for the "
            f"source(s) {allowed}, not {', '.join(foreign)}.",
        )


async def forbidden_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Forbidden)
    API_KEY_REFUSALS.labels(exc.grant.name, exc.scope.value).inc()
    return problem_response(403, "Forbidden", exc.detail)
