"""Which delivery failures are worth retrying: plain rules, no I/O."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from shared.errors import TransientError

_DELIVERY_NAMESPACE = uuid5(NAMESPACE_URL, "https://roac.example.org/deliveries")


class PermanentDeliveryError(Exception):
    """The destination refused for good (unknown mailbox, policy rejection): do not retry."""


class TransientDeliveryError(TransientError):
    """The destination may accept later (greylisting, busy, unreachable): retry."""


def smtp_failure(code: int, message: str) -> Exception:
    """RFC 5321: 4xx replies are transient, 5xx permanent."""
    text = f"SMTP {code}: {message}"[:300]
    if 500 <= code < 600:
        return PermanentDeliveryError(text)
    return TransientDeliveryError(text)


def delivery_id(proposal_id: UUID, source: str, external_id: str, channel: str) -> UUID:
    """Stable per (introduction, recipient, channel): a redelivered proposal maps to one row."""
    return uuid5(_DELIVERY_NAMESPACE, f"{proposal_id}/{source}/{external_id}/{channel}")
