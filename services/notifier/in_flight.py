"""What to do with a delivery recorded in flight, as plain Python (no database, no clock).

Every attempt is recorded in flight (its idempotency key, when it started, a claim token) in a
committed transaction before its provider is called, and its result in a second one after. A
delivery found still in flight is one of:

- **someone's send in progress** (younger than the bound, `ROAC_DELIVERY_IN_FLIGHT_SECONDS`:
  a live process, this one or another notifier, may still be talking to the provider or
  writing the result): left alone (`WAIT`); the reconciliation sweep comes back to it;
- **a result this process holds** (its result write failed, e.g. PostgreSQL restarted):
  recorded as it happened (`RECORD`), nothing sent again;
- **orphaned** (older than the bound: the process that sent it died, or gave up writing the
  result): reconciled according to what the channel's receiver can tell apart:

- `webhook` (Standard Webhooks: `webhook-id`, which receivers must deduplicate) and `matrix`
  (the transaction id: the server returns the first event): resent under the same key, up to
  `MAX_KEYED_RESENDS` times;
- `email` (the same `Message-ID`: most mail clients show one copy, but SMTP servers do not
  deduplicate): resent once, counted as a possible duplicate;
- `slack`, `slack_webhook`, `mattermost`, `discord`, `teams` (no key at all): with
  `ROAC_DELIVERY_UNKEYED_RECONCILE=resend_once` (the default) resent once, counted as a
  possible duplicate; with `hold` parked, never resent.

A delivery whose allowance is used up is parked (`roac deliveries list` shows it, `roac
deliveries retry` sends it again): its outcome is unknown and sending it again would risk a
second copy. So each crash costs at most one copy of each message it caught in flight, and a
message without a receiver-side key is never shown more than twice, however many crashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.events import ChannelType


class Idempotency(StrEnum):
    """What a resend under the same key means to the channel's receiver."""

    DEDUPLICATED = "deduplicated"  # the receiver drops a repeated key: a resend is harmless
    SAME_MESSAGE_ID = "same_message_id"  # email: the same Message-ID, shown once by most clients
    NONE = "none"  # no key at all: a resend after a send that got through is a second message


_IDEMPOTENCY = {
    ChannelType.WEBHOOK: Idempotency.DEDUPLICATED,
    ChannelType.MATRIX: Idempotency.DEDUPLICATED,
    ChannelType.EMAIL: Idempotency.SAME_MESSAGE_ID,
}


def idempotency_of(channel: ChannelType) -> Idempotency:
    return _IDEMPOTENCY.get(channel, Idempotency.NONE)


class UnkeyedPolicy(StrEnum):
    """`ROAC_DELIVERY_UNKEYED_RECONCILE`: what an orphaned send on a channel without a key gets."""

    RESEND_ONCE = "resend_once"  # never lost; at most one extra copy, counted
    HOLD = "hold"  # never twice; parked for an operator, possibly never delivered


class Action(StrEnum):
    SEND = "send"  # not in flight: an ordinary attempt
    WAIT = "wait"  # in flight and young: someone may still be sending; touch nothing
    RECORD = "record"  # this process knows the outcome: record it, send nothing
    RESEND = "resend"  # orphaned: send again under the same key
    PARK = "park"  # orphaned, no resend allowed: outcome unknown, parked


# Resends of one delivery under a key its receiver deduplicates: more means the delivery
# itself keeps killing its sender (a poison message), which an operator should look at.
MAX_KEYED_RESENDS = 3
# Resends of one delivery whose receiver may show a repeat: each may be one extra copy.
MAX_UNKEYED_RESENDS = 1


@dataclass(frozen=True)
class InFlight:
    """A delivery's in-flight record, as the worker found it under its row lock."""

    age_seconds: float  # since the attempt was recorded in flight
    resends: int  # in-flight attempts of this delivery already reconciled by resending
    outcome_known: bool = False  # this process holds the attempt's result (unwritten)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    # The resend may show the recipient a second copy (roac_notifier_possible_duplicates_total).
    possible_duplicate: bool = False


def reconcile(
    channel: ChannelType,
    in_flight: InFlight | None,
    *,
    bound_seconds: float,
    unkeyed: UnkeyedPolicy = UnkeyedPolicy.RESEND_ONCE,
) -> Decision:
    """What to do with a delivery about to be attempted, given its in-flight record (None:
    not in flight)."""
    if in_flight is None:
        return Decision(Action.SEND)
    if in_flight.outcome_known:
        return Decision(Action.RECORD, "result held by this process, written now")
    if in_flight.age_seconds < bound_seconds:
        return Decision(Action.WAIT, "in flight: a send may be in progress")
    kind = idempotency_of(channel)
    if kind is Idempotency.DEDUPLICATED:
        if in_flight.resends < MAX_KEYED_RESENDS:
            return Decision(Action.RESEND, "orphaned in flight: resent under the same key")
        return Decision(
            Action.PARK,
            f"in flight at {in_flight.resends + 1} crashes, outcome unknown: not resent again",
        )
    if kind is Idempotency.NONE and unkeyed is UnkeyedPolicy.HOLD:
        return Decision(
            Action.PARK,
            f"in flight at a crash, outcome unknown: {channel.value} has no "
            "idempotency key and ROAC_DELIVERY_UNKEYED_RECONCILE=hold",
        )
    if in_flight.resends < MAX_UNKEYED_RESENDS:
        how = "the same Message-ID" if kind is Idempotency.SAME_MESSAGE_ID else "no key"
        return Decision(
            Action.RESEND, f"orphaned in flight: resent once ({how})", possible_duplicate=True
        )
    return Decision(
        Action.PARK,
        "in flight at a crash again after its one resend, outcome unknown: not resent "
        "(a third copy is never risked)",
    )
