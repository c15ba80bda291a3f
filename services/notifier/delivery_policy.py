"""Delivery rules as plain Python: failure kinds, stable ids, allowed destinations."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from urllib.parse import urlsplit
from uuid import NAMESPACE_URL, UUID, uuid5

from shared.errors import TransientError

_DELIVERY_NAMESPACE = uuid5(NAMESPACE_URL, "https://roac.example.org/deliveries")


class PermanentDeliveryError(Exception):
    """The destination refused for good (unknown mailbox, bad webhook, no access): do not retry
    on this channel."""


class TransientDeliveryError(TransientError):
    """The destination may accept later (throttled, busy, unreachable): retry, not sooner than
    `retry_after` seconds when the provider said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def smtp_failure(code: int, message: str) -> Exception:
    """RFC 5321: 4xx replies are transient, 5xx permanent."""
    text = f"SMTP {code}: {message}"[:300]
    if 500 <= code < 600:
        return PermanentDeliveryError(text)
    return TransientDeliveryError(text)


def delivery_id(proposal_id: UUID, kind: str, recipient_key: str) -> UUID:
    """Stable per (introduction, kind of message, recipient): a redelivered proposal or a second
    click maps to the same delivery row."""
    return uuid5(_DELIVERY_NAMESPACE, f"{proposal_id}/{kind}/{recipient_key}")


def destination_allowed(url: str, patterns: Iterable[str]) -> bool:
    """Whether a webhook URL's host is on the operator's list (`*.x.org` covers subdomains)."""
    host = (urlsplit(url).hostname or "").lower()
    if not host:
        return False
    return any(host == p or (p.startswith("*.") and fnmatch.fnmatch(host, p)) for p in patterns)
