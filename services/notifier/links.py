"""Signed, single-purpose, expiring links (accept, decline, unsubscribe): plain Python, no I/O.

A token is `<payload>.<mac>`, both base64url: the payload is compact JSON naming the action,
the introduction, the person and an expiry; the MAC is HMAC-SHA256 over a versioned prefix and
the payload with ROAC_SECRET_KEY, truncated to 128 bits. A token for one action cannot be used
for another, and nothing in it can be changed without the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

_PREFIX = b"roac-link-v1."
_MAC_BYTES = 16


class LinkAction(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    UNSUBSCRIBE = "unsubscribe"


class InvalidLink(Exception):
    """The link is malformed, was tampered with, or has expired."""


@dataclass(frozen=True)
class LinkClaim:
    action: LinkAction
    source: str
    external_id: str
    expires_at: int  # unix seconds
    intro_id: UUID | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> bytes:
    return hmac.new(secret, _PREFIX + payload.encode(), hashlib.sha256).digest()[:_MAC_BYTES]


def sign(claim: LinkClaim, secret: bytes) -> str:
    body = {
        "a": claim.action.value,
        "s": claim.source,
        "x": claim.external_id,
        "e": claim.expires_at,
    }
    if claim.intro_id is not None:
        body["i"] = str(claim.intro_id)
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_b64(_mac(secret, payload))}"


def verify(token: str, secret: bytes, now: float) -> LinkClaim:
    payload, dot, mac = token.partition(".")
    if not dot or not payload or not mac or len(token) > 2048:
        raise InvalidLink("malformed")
    try:
        presented = _unb64(mac)
    except (binascii.Error, ValueError) as exc:
        raise InvalidLink("malformed") from exc
    if not hmac.compare_digest(presented, _mac(secret, payload)):
        raise InvalidLink("bad signature")
    try:
        body = json.loads(_unb64(payload))
        claim = LinkClaim(
            action=LinkAction(body["a"]),
            source=str(body["s"]),
            external_id=str(body["x"]),
            expires_at=int(body["e"]),
            intro_id=UUID(body["i"]) if "i" in body else None,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidLink("malformed") from exc
    if now > claim.expires_at:
        raise InvalidLink("expired")
    return claim


class LinkMaker:
    """Builds the URLs of a recipient's links under ROAC_PUBLIC_URL."""

    ANSWER_GRACE_SECONDS = 7 * 24 * 3600  # a late click says "expired", not "invalid link"
    UNSUBSCRIBE_SECONDS = 365 * 24 * 3600

    def __init__(self, public_url: str, secret: bytes) -> None:
        self._base = public_url.rstrip("/")
        self._secret = secret

    def url(self, claim: LinkClaim) -> str:
        return f"{self._base}/links/{sign(claim, self._secret)}"

    def answer(
        self, action: LinkAction, intro_id: UUID, source: str, external_id: str, asks_end: float
    ) -> str:
        expires = int(asks_end) + self.ANSWER_GRACE_SECONDS
        return self.url(LinkClaim(action, source, external_id, expires, intro_id))

    def unsubscribe(self, source: str, external_id: str, now: float) -> str:
        expires = int(now) + self.UNSUBSCRIBE_SECONDS
        return self.url(LinkClaim(LinkAction.UNSUBSCRIBE, source, external_id, expires))
