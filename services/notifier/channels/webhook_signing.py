"""Signing the generic webhook the Standard Webhooks way (https://www.standardwebhooks.com/).

Why its own module and its own secrets: a webhook receiver must be able to check that a message
comes from roac, but must hold nothing that signs anything else. Each destination (its URL,
normalised) gets its own secret, derived from the server's ROAC_WEBHOOK_SIGNING_KEY:

    key    = HMAC-SHA256(signing key, "roac-webhook-destination-v1." + normalised URL)
    secret = "whsec_" + base64(key)

so one receiver can verify its own messages but can neither mint a link (link keys are separate,
services/notifier/links.py) nor sign messages another destination would accept. The operator
hands a receiver its secret with `roac webhooks secret URL`.

Each message carries `webhook-id` (stable per delivery and channel: a resend carries the same
id, the receiver's idempotency key), `webhook-timestamp` (unix seconds) and `webhook-signature`
(`v1,` + base64 HMAC-SHA256 under the key over `{id}.{timestamp}.{body}`), so receivers verify
with the Standard Webhooks libraries in any language. Plain Python, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit, urlunsplit

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
_DERIVATION_PREFIX = b"roac-webhook-destination-v1."
_DEFAULT_PORTS = {"http": 80, "https": 443}

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def normalise_destination(url: str) -> str:
    """The destination a secret belongs to: scheme and host lower-cased, the default port and
    any user info and fragment dropped, an empty path as `/`; path and query as given.
    Raise ValueError for anything that is not an absolute http(s) URL."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not an absolute http(s) URL: {url!r} ({exc})") from exc
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def destination_key(signing_key: bytes, url: str) -> bytes:
    """The HMAC key of one destination (what its `whsec_` secret encodes)."""
    if not signing_key:
        raise ValueError("no webhook signing key (ROAC_WEBHOOK_SIGNING_KEY)")
    message = _DERIVATION_PREFIX + normalise_destination(url).encode()
    return hmac.new(signing_key, message, hashlib.sha256).digest()


def destination_secret(signing_key: bytes, url: str) -> str:
    """The `whsec_` secret the receiver at `url` verifies its messages with."""
    return SECRET_PREFIX + base64.b64encode(destination_key(signing_key, url)).decode()


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{body}`."""
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one message."""
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(key, message_id, timestamp, body),
    }
