"""Signed, single-purpose, expiring links (accept, decline, unsubscribe, a person's preferences
page): plain Python, no I/O.

A token is `<key id>.<sealed>`, both URL-safe: `sealed` is base64url of a nonce and the compact
JSON claim (the action, the introduction, the person, an expiry) encrypted and authenticated
with AES-256-GCM under a key derived from one link key of the ring, with the key id and a
version as associated data. So a token for one action cannot be used for another, nothing in
it can be changed without the key, and nobody who sees a link (a mail archive, a proxy log, a
screenshot) can read whose it is: the token carries no readable personal identifier.

The keys form a ring (`ROAC_LINK_KEYS`, newest first): the newest signs, every key verifies, and
each token names its key, so a key can be rotated without breaking the unsubscribe links already
in people's inboxes. Link keys sign nothing else: webhooks have their own per-destination
secrets (services/notifier/channels/webhook_signing.py), so a webhook receiver holds nothing
that could mint a link.

Tokens of the first format (`<payload>.<mac>`, HMAC-SHA256 with a readable payload, before
key ids existed) are still verified against every key of the ring, so links sent before an
upgrade keep working until they expire.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_LEGACY_PREFIX = b"roac-link-v1."
_LEGACY_MAC_BYTES = 16
_AAD_PREFIX = b"roac-link-v2."
_NONCE_BYTES = 12
_MAX_TOKEN_CHARS = 2048
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class LinkAction(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    UNSUBSCRIBE = "unsubscribe"
    # "Did you meet?" (services/notifier/checkins.py): the four answers, and the rating after
    CHECKIN_MET = "checkin_met"
    CHECKIN_NOT_YET = "checkin_not_yet"
    CHECKIN_DIDNT_HAPPEN = "checkin_didnt_happen"
    CHECKIN_NOT_FOR_ME = "checkin_not_for_me"
    CHECKIN_RATE = "checkin_rate"
    PREFERENCES = "preferences"  # the person's preferences page (/preferences/<token>)


class InvalidLink(Exception):
    """The link is malformed, was tampered with, or has expired."""


@dataclass(frozen=True)
class LinkClaim:
    action: LinkAction
    source: str
    external_id: str
    expires_at: int  # unix seconds
    intro_id: UUID | None = None


@dataclass(frozen=True)
class _RingKey:
    key_id: str
    secret: bytes
    aead: AESGCM


class LinkKeyring:
    """The link keys, newest first: the first signs, all verify."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a link keyring needs at least one key")
        ring: list[_RingKey] = []
        for key_id, secret in keys:
            if not KEY_ID.fullmatch(key_id):
                raise ValueError(f"link key id {key_id!r}: 1 to 32 of A-Z a-z 0-9 _ -")
            if any(k.key_id == key_id for k in ring):
                raise ValueError(f"link key id {key_id!r} appears twice")
            derived = hmac.new(secret, b"roac-link-v2-aead", hashlib.sha256).digest()
            ring.append(_RingKey(key_id, secret, AESGCM(derived)))
        self._ring = tuple(ring)
        self._by_id = {k.key_id: k for k in ring}

    @classmethod
    def single(cls, secret: bytes, key_id: str = "0") -> LinkKeyring:
        return cls([(key_id, secret)])

    @property
    def signing_key_id(self) -> str:
        return self._ring[0].key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self._ring)

    def sign(self, claim: LinkClaim) -> str:
        key = self._ring[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = key.aead.encrypt(nonce, _claim_json(claim), _AAD_PREFIX + key.key_id.encode())
        return f"{key.key_id}.{_b64(nonce + sealed)}"

    def verify(self, token: str, now: float) -> LinkClaim:
        if len(token) > _MAX_TOKEN_CHARS or token.count(".") != 1:
            raise InvalidLink("malformed")
        first, _, second = token.partition(".")
        if not first or not second:
            raise InvalidLink("malformed")
        key = self._by_id.get(first)
        if key is not None:
            claim = _parse_claim(self._open(key, second))
        else:
            claim = _parse_claim(self._legacy_payload(first, second))
        if now > claim.expires_at:
            raise InvalidLink("expired")
        return claim

    def _open(self, key: _RingKey, sealed_b64: str) -> bytes:
        try:
            sealed = _unb64(sealed_b64)
        except (binascii.Error, ValueError) as exc:
            raise InvalidLink("malformed") from exc
        if len(sealed) <= _NONCE_BYTES:
            raise InvalidLink("malformed")
        try:
            return key.aead.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _AAD_PREFIX + key.key_id.encode()
            )
        except InvalidTag as exc:
            raise InvalidLink("bad signature") from exc

    def _legacy_payload(self, payload: str, mac_b64: str) -> bytes:
        """A first-format token: HMAC over a readable payload, valid under any ring key."""
        try:
            presented = _unb64(mac_b64)
            body = _unb64(payload)
        except (binascii.Error, ValueError) as exc:
            raise InvalidLink("malformed") from exc
        for key in self._ring:
            expected = hmac.new(
                key.secret, _LEGACY_PREFIX + payload.encode(), hashlib.sha256
            ).digest()[:_LEGACY_MAC_BYTES]
            if hmac.compare_digest(presented, expected):
                return body
        raise InvalidLink("bad signature")


def _claim_json(claim: LinkClaim) -> bytes:
    body: dict[str, str | int] = {
        "a": claim.action.value,
        "s": claim.source,
        "x": claim.external_id,
        "e": claim.expires_at,
    }
    if claim.intro_id is not None:
        body["i"] = str(claim.intro_id)
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _parse_claim(raw: bytes) -> LinkClaim:
    try:
        body = json.loads(raw)
        return LinkClaim(
            action=LinkAction(body["a"]),
            source=str(body["s"]),
            external_id=str(body["x"]),
            expires_at=int(body["e"]),
            intro_id=UUID(body["i"]) if "i" in body else None,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidLink("malformed") from exc


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claim: LinkClaim, keyring: LinkKeyring) -> str:
    return keyring.sign(claim)


def verify(token: str, keyring: LinkKeyring, now: float) -> LinkClaim:
    return keyring.verify(token, now)


def sign_legacy(claim: LinkClaim, secret: bytes) -> str:
    """A first-format token, as links sent before key ids existed look (tests of the upgrade)."""
    payload = _b64(_claim_json(claim))
    mac = hmac.new(secret, _LEGACY_PREFIX + payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac[:_LEGACY_MAC_BYTES])}"


class LinkMaker:
    """Builds the URLs of a recipient's links under ROAC_PUBLIC_URL."""

    ANSWER_GRACE_SECONDS = 7 * 24 * 3600  # a late click says "expired", not "invalid link"
    UNSUBSCRIBE_SECONDS = 365 * 24 * 3600
    PREFERENCES_SECONDS = 30 * 24 * 3600  # every new message carries a fresh one

    def __init__(self, public_url: str, keyring: LinkKeyring) -> None:
        self._base = public_url.rstrip("/")
        self._keyring = keyring

    def url(self, claim: LinkClaim) -> str:
        return f"{self._base}/links/{self._keyring.sign(claim)}"

    def answer(
        self, action: LinkAction, intro_id: UUID, source: str, external_id: str, asks_end: float
    ) -> str:
        expires = int(asks_end) + self.ANSWER_GRACE_SECONDS
        return self.url(LinkClaim(action, source, external_id, expires, intro_id))

    def unsubscribe(self, source: str, external_id: str, now: float) -> str:
        expires = int(now) + self.UNSUBSCRIBE_SECONDS
        return self.url(LinkClaim(LinkAction.UNSUBSCRIBE, source, external_id, expires))

    def preferences(self, source: str, external_id: str, now: float) -> str:
        """The person's preferences page (services/notifier/preferences_routes.py)."""
        expires = int(now) + self.PREFERENCES_SECONDS
        claim = LinkClaim(LinkAction.PREFERENCES, source, external_id, expires)
        return f"{self._base}/preferences/{self._keyring.sign(claim)}"
