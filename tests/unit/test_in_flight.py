"""The in-flight reconciliation decisions (services/notifier/in_flight.py), table-driven, no
database."""

from __future__ import annotations

import pytest

from services.notifier.in_flight import (
    MAX_KEYED_RESENDS,
    Action,
    Idempotency,
    InFlight,
    UnkeyedPolicy,
    idempotency_of,
    reconcile,
)
from shared.events import ChannelType

BOUND = 60.0
YOUNG = InFlight(age_seconds=5, resends=0)
ORPHANED = InFlight(age_seconds=BOUND + 1, resends=0)
ORPHANED_RESENT = InFlight(age_seconds=BOUND + 1, resends=1)
KNOWN = InFlight(age_seconds=BOUND + 1, resends=0, outcome_known=True)

UNKEYED = [
    ChannelType.SLACK,
    ChannelType.SLACK_WEBHOOK,
    ChannelType.MATTERMOST,
    ChannelType.DISCORD,
    ChannelType.TEAMS,
]
KEYED = [ChannelType.WEBHOOK, ChannelType.MATRIX]


def test_every_channel_has_a_known_idempotency() -> None:
    assert {idempotency_of(c) for c in KEYED} == {Idempotency.DEDUPLICATED}
    assert idempotency_of(ChannelType.EMAIL) is Idempotency.SAME_MESSAGE_ID
    assert {idempotency_of(c) for c in UNKEYED} == {Idempotency.NONE}
    assert set(KEYED + UNKEYED + [ChannelType.EMAIL]) == set(ChannelType)


# (channel, in flight, unkeyed policy) -> (action, possible duplicate)
TABLE = [
    # Not in flight: an ordinary send, whatever the channel.
    *[(c, None, UnkeyedPolicy.RESEND_ONCE, Action.SEND, False) for c in ChannelType],
    # Young: a live process may be sending it right now. Never touched.
    *[(c, YOUNG, p, Action.WAIT, False) for c in ChannelType for p in UnkeyedPolicy],
    # This process holds the result (its write failed): recorded, never resent.
    *[(c, KNOWN, p, Action.RECORD, False) for c in ChannelType for p in UnkeyedPolicy],
    # Receivers that deduplicate: resent under the same key, not a possible duplicate.
    *[(c, ORPHANED, p, Action.RESEND, False) for c in KEYED for p in UnkeyedPolicy],
    *[(c, ORPHANED_RESENT, p, Action.RESEND, False) for c in KEYED for p in UnkeyedPolicy],
    *[
        (c, InFlight(BOUND + 1, MAX_KEYED_RESENDS), p, Action.PARK, False)
        for c in KEYED
        for p in UnkeyedPolicy
    ],
    # Email: the same Message-ID once, counted; then parked (policy does not apply: it has a key).
    *[(ChannelType.EMAIL, ORPHANED, p, Action.RESEND, True) for p in UnkeyedPolicy],
    *[(ChannelType.EMAIL, ORPHANED_RESENT, p, Action.PARK, False) for p in UnkeyedPolicy],
    # No key, resend_once: one resend, counted; a second orphaned attempt is parked.
    *[(c, ORPHANED, UnkeyedPolicy.RESEND_ONCE, Action.RESEND, True) for c in UNKEYED],
    *[(c, ORPHANED_RESENT, UnkeyedPolicy.RESEND_ONCE, Action.PARK, False) for c in UNKEYED],
    # No key, hold: never resent.
    *[(c, ORPHANED, UnkeyedPolicy.HOLD, Action.PARK, False) for c in UNKEYED],
]


@pytest.mark.parametrize(("channel", "in_flight", "policy", "action", "duplicate"), TABLE)
def test_reconcile(
    channel: ChannelType,
    in_flight: InFlight | None,
    policy: UnkeyedPolicy,
    action: Action,
    duplicate: bool,
) -> None:
    decision = reconcile(channel, in_flight, bound_seconds=BOUND, unkeyed=policy)
    assert decision.action is action
    assert decision.possible_duplicate is duplicate
    assert (decision.reason == "") is (action is Action.SEND)


def test_the_bound_is_exclusive() -> None:
    at_bound = InFlight(age_seconds=BOUND, resends=0)
    assert reconcile(ChannelType.WEBHOOK, at_bound, bound_seconds=BOUND).action is Action.RESEND
    just_under = InFlight(age_seconds=BOUND - 0.001, resends=0)
    assert reconcile(ChannelType.WEBHOOK, just_under, bound_seconds=BOUND).action is Action.WAIT


@pytest.mark.parametrize("channel", [*UNKEYED, ChannelType.EMAIL])
def test_a_message_without_a_deduplicating_receiver_is_never_sent_more_than_twice(
    channel: ChannelType,
) -> None:
    """Crash after crash, each orphaned attempt reconciled: one send, then at most one resend."""
    sends, resends = 1, 0
    while True:
        decision = reconcile(channel, InFlight(BOUND * 2, resends), bound_seconds=BOUND)
        if decision.action is not Action.RESEND:
            break
        sends, resends = sends + 1, resends + 1
    assert decision.action is Action.PARK and sends == 2
