"""API keys: kept only as SHA-256 digests, checked in constant time, required on every /v1/ path."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.problems import problem_response


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class ApiKeyring:
    def __init__(self, keys: Mapping[str, str]) -> None:
        self._digests = [(name, _digest(secret)) for name, secret in keys.items()]

    def authenticate(self, presented: str) -> str | None:
        """The key's name, or None. Every stored digest is compared, match or not, so timing
        does not reveal which key (or how much of one) matched."""
        candidate = _digest(presented)
        found: str | None = None
        for name, digest in self._digests:
            if hmac.compare_digest(candidate, digest):
                found = name
        return found


def bearer_token(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
    return None


class ApiKeyMiddleware:
    """Answers 401 before the body is read, so an unauthenticated caller costs nothing more."""

    def __init__(self, app: ASGIApp, keyring: ApiKeyring, protected_prefix: str = "/v1/") -> None:
        self._app = app
        self._keyring = keyring
        self._prefix = protected_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self._prefix):
            await self._app(scope, receive, send)
            return
        token = bearer_token(scope)
        name = self._keyring.authenticate(token) if token else None
        if name is None:
            response = problem_response(
                401,
                "Unauthorized",
                "Send a valid API key as 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["integration"] = name
        await self._app(scope, receive, send)
