"""Signed cookie values: `payload.expires.signature`, the signature an HMAC-SHA256 under
ROAC_CONSOLE_SESSION_KEY over a purpose, the payload and the expiry. A value signed for one
purpose (a session) is refused for another (the sign-in form's CSRF token), an altered or
expired one is refused, and the comparison takes constant time.

The cookie is only the pointer: the session row (services/console/accounts.py) decides whether
a session still holds, so signing out ends it at once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

SESSION_COOKIE = "roac_console_session"
SIGNIN_COOKIE = "roac_console_signin"


class CookieSigner:
    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a signing key is required")
        self._key = key

    def _signature(self, purpose: str, payload: str, expires: int) -> str:
        message = f"{purpose}\x00{payload}\x00{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def sign(self, purpose: str, payload: str, expires: int) -> str:
        """`payload` (no dots) valid until the Unix time `expires`."""
        if "." in payload:
            raise ValueError("a signed payload holds no dot")
        return f"{payload}.{expires}.{self._signature(purpose, payload, expires)}"

    def verify(self, purpose: str, value: str | None, now: float | None = None) -> str | None:
        """The payload of a value this signer made for `purpose`, still valid; else None."""
        if not value or value.count(".") != 2:
            return None
        payload, expires_text, signature = value.split(".")
        if not expires_text.isdigit() or len(expires_text) > 12:
            return None
        expires = int(expires_text)
        expected = self._signature(purpose, payload, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return None
        if expires <= (time.time() if now is None else now):
            return None
        return payload
