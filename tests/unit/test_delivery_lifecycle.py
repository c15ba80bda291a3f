"""The delivery lifecycle (services/notifier/delivery_lifecycle.py), table-driven, in memory: no
database, no broker, no clock. Each case names the integration test that covers the same
branch end to end, where one does."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from services.notifier import delivery_lifecycle as lifecycle
from services.notifier.delivery_lifecycle import (
    UNSENT,
    Due,
    IntroEffect,
    Next,
    Outcome,
    Policy,
    RetryPolicy,
    Status,
    Verdict,
)
from services.notifier.delivery_policy import PermanentDeliveryError, TransientDeliveryError
from services.notifier.in_flight import Action, InFlight, UnkeyedPolicy
from services.notifier.optin import OPEN_STATES, IntroState
from services.notifier.planning import QuietHours
from services.notifier.store.rows import DeliveryRecord
from services.notifier.store.rules import OPEN_STATES_SQL, UNSENT_SQL
from shared.events import ChannelAddress, ChannelType, DeliveryKind, Participant

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # noon UTC: nobody's quiet hours in UTC
BOUND = 60.0
RETRY = RetryPolicy(max_attempts=3, base_seconds=5, max_delay_seconds=600)
AWAKE = QuietHours(enabled=False, start=21, end=8, fallback_timezone="UTC")
QUIET = QuietHours(enabled=True, start=21, end=8, fallback_timezone="UTC")
POLICY = Policy(RETRY, AWAKE, BOUND, UnkeyedPolicy.RESEND_ONCE)
EVERY_CHANNEL = frozenset(ChannelType)
YOUNG = InFlight(age_seconds=5, resends=0)
ORPHANED = InFlight(age_seconds=BOUND + 1, resends=0)
ORPHANED_RESENT = InFlight(age_seconds=BOUND + 1, resends=1)
HELD = InFlight(age_seconds=1, resends=0, outcome_known=True)


def person(*channels: tuple[ChannelType, str], timezone: str | None = None) -> Participant:
    return Participant(
        source="crm",
        external_id=uuid4().hex[:8],
        name="Ada",
        timezone=timezone,
        channels=[ChannelAddress(type=t, address=a) for t, a in channels],
    )


EMAIL = (ChannelType.EMAIL, "ada@example.org")
HOOK = (ChannelType.WEBHOOK, "https://hooks.example.org/a")
SLACK = (ChannelType.SLACK, "U123")
TEAMS = (ChannelType.TEAMS, "https://teams.example.org/a")


def delivery(
    kind: DeliveryKind = DeliveryKind.INTRO,
    channel: ChannelType = ChannelType.EMAIL,
    **changes: object,
) -> DeliveryRecord:
    row = DeliveryRecord(
        id=uuid4(),
        proposal_id=uuid4(),
        kind=kind,
        positions=(0,),
        recipient_source="crm",
        recipient_external_id="42",
        channel=channel.value,
        channel_index=0,
        status="pending",
        attempts=0,
        generation=0,
        not_before=NOW,
    )
    return replace(row, **changes)  # type: ignore[arg-type]


def due(
    row: DeliveryRecord,
    people: list[Participant] | None = None,
    *,
    generation: int = 0,
    in_flight: InFlight | None = None,
    intro_state: IntroState | None = IntroState.ACCEPTED,
    opted_out: bool = False,
    configured: frozenset[ChannelType] = EVERY_CHANNEL,
    policy: Policy = POLICY,
    now: datetime = NOW,
) -> Due:
    return lifecycle.when_due(
        row,
        generation=generation,
        in_flight=in_flight,
        intro_state=intro_state,
        opted_out=opted_out,
        people=people or [person(EMAIL, HOOK)],
        configured=configured,
        policy=policy,
        now=now,
    )


# When a job comes due: delivery, keyword arguments, verdict, outcome of the change
WHEN_DUE = [
    # test_direct_mode_introduces_each_participant_once_however_often_it_arrives
    pytest.param(delivery(), {}, Verdict.SEND, None, id="an ordinary attempt"),
    pytest.param(
        delivery(status="sent"), {}, Verdict.DUPLICATE, None, id="a repeated job of a delivery sent"
    ),
    pytest.param(
        delivery(generation=2),
        {"generation": 1},
        Verdict.DUPLICATE,
        None,
        id="a job of an older generation",
    ),
    # test_in_flight: a second copy of a job while the first one sends
    pytest.param(
        delivery(), {"in_flight": YOUNG}, Verdict.IN_FLIGHT, None, id="someone is sending it"
    ),
    # test_results_held_through_a_long_outage_are_recorded_not_resent
    pytest.param(
        delivery(), {"in_flight": HELD}, Verdict.RECORD, None, id="its result is held here"
    ),
    pytest.param(
        delivery(status="cancelled"),
        {"in_flight": HELD},
        Verdict.RECORD,
        None,
        id="a held result of a row closed since",
    ),
    # test_a_decline_ends_it_and_an_unanswered_ask_expires
    pytest.param(
        delivery(DeliveryKind.ASK),
        {"intro_state": IntroState.DECLINED},
        Verdict.CHANGE,
        Outcome.CANCELLED,
        id="an ask of an introduction declined",
    ),
    pytest.param(
        delivery(),
        {"intro_state": IntroState.ASKED},
        Verdict.CHANGE,
        Outcome.CANCELLED,
        id="an introduction of one still asking",
    ),
    pytest.param(
        delivery(DeliveryKind.ASK),
        {"intro_state": IntroState.ACCEPTED},
        Verdict.CHANGE,
        Outcome.CANCELLED,
        id="an ask after everyone said yes",
    ),
    pytest.param(
        delivery(DeliveryKind.RESOURCE),
        {"intro_state": None},
        Verdict.SEND,
        None,
        id="a resource has no introduction",
    ),
    # test_unsubscribing_stops_everything_and_tells_the_matcher; resources: opted out while waiting
    pytest.param(
        delivery(),
        {"opted_out": True},
        Verdict.CHANGE,
        Outcome.SUPPRESSED,
        id="its person opted out",
    ),
    pytest.param(
        delivery(DeliveryKind.RESOURCE),
        {"intro_state": None, "opted_out": True},
        Verdict.CHANGE,
        Outcome.SUPPRESSED,
        id="a resource to one who opted out",
    ),
    # test_quiet_hours_hold_a_message_until_local_morning
    pytest.param(
        delivery(not_before=NOW + timedelta(minutes=5)),
        {},
        Verdict.CHANGE,
        Outcome.RESCHEDULED,
        id="due later",
    ),
    pytest.param(
        delivery(),
        {"policy": replace(POLICY, quiet=QUIET), "now": NOW.replace(hour=23)},
        Verdict.CHANGE,
        Outcome.RESCHEDULED,
        id="quiet hours",
    ),
    pytest.param(
        delivery(), {"now": NOW.replace(hour=23)}, Verdict.SEND, None, id="quiet hours switched off"
    ),
    # no channel left: the person's channels ran out (a contact update removed one)
    pytest.param(
        delivery(channel_index=2), {}, Verdict.CHANGE, Outcome.FAILED, id="no channel at its index"
    ),
    # test_generic_webhook_without_a_signing_key_fails_permanently: a channel not set up
    pytest.param(
        delivery(),
        {"configured": frozenset({ChannelType.WEBHOOK})},
        Verdict.CHANGE,
        Outcome.FALLBACK,
        id="a channel not set up, a next one",
    ),
    pytest.param(
        delivery(channel=ChannelType.WEBHOOK, channel_index=1),
        {"configured": frozenset()},
        Verdict.CHANGE,
        Outcome.FAILED,
        id="a channel not set up, none left",
    ),
    # test_an_orphaned_webhook_is_resent_with_the_same_webhook_id_after_a_restart
    pytest.param(
        delivery(channel=ChannelType.WEBHOOK),
        {"in_flight": ORPHANED},
        Verdict.SEND,
        None,
        id="an orphaned webhook",
    ),
    # test_a_channel_without_a_key_is_resent_at_most_once
    pytest.param(
        delivery(channel=ChannelType.TEAMS),
        {"in_flight": ORPHANED, "people": [person(TEAMS)]},
        Verdict.SEND,
        None,
        id="an orphaned Teams post, once",
    ),
    pytest.param(
        delivery(channel=ChannelType.TEAMS),
        {"in_flight": ORPHANED_RESENT, "people": [person(TEAMS)]},
        Verdict.CHANGE,
        Outcome.PARKED,
        id="an orphaned Teams post, again",
    ),
    pytest.param(
        delivery(channel=ChannelType.TEAMS),
        {
            "in_flight": ORPHANED,
            "people": [person(TEAMS)],
            "policy": replace(POLICY, unkeyed=UnkeyedPolicy.HOLD),
        },
        Verdict.CHANGE,
        Outcome.PARKED,
        id="an orphaned Teams post, held",
    ),
    pytest.param(
        delivery(DeliveryKind.ASK),
        {"in_flight": ORPHANED, "intro_state": IntroState.DECLINED},
        Verdict.CHANGE,
        Outcome.CANCELLED,
        id="an orphaned email whose ask closed meanwhile",
    ),
    pytest.param(
        delivery(status="sent"),
        {"in_flight": ORPHANED},
        Verdict.DUPLICATE,
        None,
        id="an orphaned record of a stale job",
    ),
]


@pytest.mark.parametrize(
    ("row", "kwargs", "verdict", "outcome"),
    WHEN_DUE,
)
def test_when_due(
    row: DeliveryRecord,
    kwargs: dict[str, object],
    verdict: Verdict,
    outcome: Outcome | None,
) -> None:
    found = due(row, **kwargs)  # type: ignore[arg-type]
    assert found.verdict is verdict
    assert (found.change.outcome if found.change else None) is outcome
    if verdict is Verdict.SEND:
        assert found.change is None


def test_an_ordinary_attempt_goes_to_the_address_at_its_channel_index() -> None:
    people = [person(EMAIL, HOOK)]
    assert due(delivery(), people).destination == ("ada@example.org", ())
    second = due(delivery(channel=ChannelType.WEBHOOK, channel_index=1), people)
    assert second.destination == ("https://hooks.example.org/a", ())


def test_a_group_dm_goes_to_every_member_and_needs_each_ones_slack_id() -> None:
    group = delivery(channel=ChannelType.SLACK, positions=(0, 1))
    a, b = person(SLACK), person((ChannelType.SLACK, "U456"), EMAIL)
    assert due(group, [a, b]).destination == ("U123", ("U123", "U456"))
    # One member without a Slack id: the group cannot be messaged.
    found = due(group, [a, person(EMAIL)])
    assert found.change is not None and found.change.outcome is Outcome.FAILED


def test_an_orphaned_attempt_counts_and_is_resent_under_the_same_key() -> None:
    row = delivery(
        channel=ChannelType.WEBHOOK, attempts=1, in_flight_token=uuid4(), in_flight_since=NOW
    )
    found = due(row, in_flight=ORPHANED)
    assert found.settled is not None and found.settled.action is Action.RESEND
    assert not found.settled.possible_duplicate
    assert found.delivery.attempts == 2 and found.delivery.resends == 1
    assert found.delivery.in_flight_token is None and found.delivery.in_flight_since is None


def test_an_orphaned_unkeyed_send_resent_once_is_a_possible_duplicate() -> None:
    found = due(delivery(channel=ChannelType.TEAMS), [person(TEAMS)], in_flight=ORPHANED)
    assert found.settled is not None and found.settled.possible_duplicate


def test_an_orphaned_attempt_not_resent_is_parked_as_a_failure_that_is_not_permanent() -> None:
    row = delivery(channel=ChannelType.TEAMS, attempts=1, generation=3)
    found = due(row, [person(TEAMS)], generation=3, in_flight=ORPHANED_RESENT)
    change = found.change
    assert found.settled is not None and found.settled.action is Action.PARK
    assert change is not None and change.outcome is Outcome.PARKED
    assert change.row is not None
    assert (change.row.status, change.row.attempts, change.row.generation) == ("parked", 2, 4)
    assert change.next is Next.PARK and change.reason == found.settled.reason
    assert change.failure == lifecycle.Failure(2, found.settled.reason, permanent=False)


def test_a_wait_for_quiet_hours_lasts_until_the_recipients_morning() -> None:
    night = NOW.replace(hour=23)
    found = due(
        delivery(generation=1), generation=1, policy=replace(POLICY, quiet=QUIET), now=night
    )
    change = found.change
    assert change is not None and change.next is Next.LATER
    assert change.wait == 9 * 3600  # 23:00 to 08:00 UTC
    assert change.row is not None and change.row.generation == 2
    assert change.row.not_before == night + timedelta(hours=9)
    assert change.row.status == "pending" and change.reason is None


def test_a_delivery_due_later_waits_for_its_not_before_not_for_quiet_hours() -> None:
    found = due(delivery(not_before=NOW + timedelta(seconds=90)))
    assert found.change is not None and found.change.wait == 90


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(Status.CANCELLED, Outcome.CANCELLED), (Status.SUPPRESSED, Outcome.SUPPRESSED)],
)
def test_closing_keeps_the_attempts_and_queues_nothing(status: Status, outcome: Outcome) -> None:
    change = lifecycle.close(delivery(attempts=2), status)
    assert change.outcome is outcome and change.next is Next.NOTHING and change.failure is None
    assert change.row is not None and (change.row.status, change.row.attempts) == (status, 2)


# After a failed attempt: delivery, people, error, outcome, next job, introduction's change
AFTER_FAILURE = [
    # test_transient_failures_retry_with_backoff_then_park
    pytest.param(
        delivery(),
        [person(EMAIL)],
        TransientDeliveryError("busy"),
        Outcome.RETRIED,
        Next.LATER,
        IntroEffect.NONE,
        id="transient: retried",
    ),
    pytest.param(
        delivery(attempts=2),
        [person(EMAIL)],
        TransientDeliveryError("busy"),
        Outcome.PARKED,
        Next.PARK,
        IntroEffect.NONE,
        id="transient, last attempt: parked",
    ),
    # test_a_permanent_failure_falls_back_to_the_next_channel
    pytest.param(
        delivery(),
        [person(EMAIL, HOOK)],
        PermanentDeliveryError("no"),
        Outcome.FALLBACK,
        Next.NOW,
        IntroEffect.NONE,
        id="refused: the next channel",
    ),
    pytest.param(
        delivery(),
        [person(EMAIL)],
        PermanentDeliveryError("no"),
        Outcome.FAILED,
        Next.NOTHING,
        IntroEffect.FINISH,
        id="refused, none left: failed",
    ),
    pytest.param(
        delivery(DeliveryKind.ASK),
        [person(EMAIL)],
        PermanentDeliveryError("no"),
        Outcome.FAILED,
        Next.NOTHING,
        IntroEffect.FAIL,
        id="an ask refused everywhere fails its introduction",
    ),
    pytest.param(
        delivery(DeliveryKind.RESOURCE),
        [person(EMAIL)],
        PermanentDeliveryError("no"),
        Outcome.FAILED,
        Next.NOTHING,
        IntroEffect.NONE,
        id="a resource refused everywhere",
    ),
    # test_slack_app_errors: a group DM refused
    pytest.param(
        delivery(channel=ChannelType.SLACK, positions=(0, 1)),
        [person(SLACK, EMAIL), person(SLACK)],
        PermanentDeliveryError("no"),
        Outcome.GROUP_FALLBACK,
        Next.NOTHING,
        IntroEffect.NONE,
        id="a group DM refused: members on their own",
    ),
    pytest.param(
        delivery(channel=ChannelType.SLACK, positions=(0, 1)),
        [person(SLACK), person(SLACK)],
        PermanentDeliveryError("no"),
        Outcome.GROUP_FAILED,
        Next.NOTHING,
        IntroEffect.FINISH,
        id="a group DM refused, nobody has another channel",
    ),
]


@pytest.mark.parametrize(
    ("row", "people", "error", "outcome", "after", "intro"),
    AFTER_FAILURE,
)
def test_after_failure(
    row: DeliveryRecord,
    people: list[Participant],
    error: PermanentDeliveryError | TransientDeliveryError,
    outcome: Outcome,
    after: Next,
    intro: IntroEffect,
) -> None:
    change = lifecycle.after_failure(
        row, error, people=people, retry=RETRY, now=NOW, rng=random.Random(1)
    )
    assert change is not None
    assert (change.outcome, change.next, change.intro) == (outcome, after, intro)


@pytest.mark.parametrize("status", ["sent", "cancelled", "suppressed", "failed", "parked"])
def test_a_failure_of_a_row_closed_while_in_flight_changes_nothing(status: str) -> None:
    for error in (TransientDeliveryError("busy"), PermanentDeliveryError("no")):
        assert (
            lifecycle.after_failure(
                delivery(status=status),
                error,
                people=[person(EMAIL)],
                retry=RETRY,
                now=NOW,
                rng=random.Random(1),
            )
            is None
        )


def test_a_retry_waits_the_backoff_with_jitter_and_counts_the_attempt() -> None:
    change = lifecycle.retry_or_park(
        delivery(attempts=1, generation=4),
        TransientDeliveryError("busy"),
        retry=RETRY,
        now=NOW,
        rng=random.Random(1),
    )
    assert change.row is not None
    assert 15 * 0.8 <= change.wait <= 15 * 1.2  # 5 s x 3^(2-1), +-20 %
    assert (change.row.attempts, change.row.generation, change.row.status) == (2, 5, "pending")
    assert change.row.not_before == NOW + timedelta(seconds=change.wait)
    assert change.reason == "busy" and change.failure is None


def test_a_retry_never_comes_before_the_providers_retry_after() -> None:
    change = lifecycle.retry_or_park(
        delivery(),
        TransientDeliveryError("throttled", retry_after=300),
        retry=RETRY,
        now=NOW,
        rng=random.Random(1),
    )
    assert change.wait == 300


def test_the_last_attempt_parks_with_the_reason_and_a_failure_that_is_not_permanent() -> None:
    change = lifecycle.retry_or_park(
        delivery(attempts=2, generation=2),
        TransientDeliveryError("busy"),
        retry=RETRY,
        now=NOW,
        rng=random.Random(1),
    )
    reason = "gave up after 3 attempts: busy"
    assert change.row is not None
    assert (change.row.status, change.row.attempts, change.row.generation) == ("parked", 3, 3)
    assert change.reason == reason and change.next is Next.PARK
    assert change.failure == lifecycle.Failure(3, reason, permanent=False)


def test_a_fallback_starts_the_next_channel_with_a_fresh_budget() -> None:
    change = lifecycle.refused(
        delivery(attempts=1, generation=2), [person(EMAIL, HOOK)], "mailbox unknown", NOW
    )
    row = change.row
    assert row is not None and change.failure is None
    assert (row.channel, row.channel_index, row.attempts, row.generation) == ("webhook", 1, 0, 3)
    assert row.status == "pending" and row.not_before == NOW
    assert change.reason == "mailbox unknown"


def test_giving_up_counts_the_failed_attempt_and_reports_it_permanent() -> None:
    change = lifecycle.give_up(delivery(attempts=1), "no channel left to try")
    assert change.row is not None and (change.row.status, change.row.attempts) == ("failed", 2)
    assert change.failure == lifecycle.Failure(2, "no channel left to try", permanent=True)


def test_a_refused_group_dm_becomes_each_members_own_delivery_on_their_next_channel() -> None:
    group = delivery(channel=ChannelType.SLACK, positions=(0, 2), attempts=0)
    with_email, slack_only = person(SLACK, EMAIL), person(SLACK)
    change = lifecycle.refused(group, [with_email, slack_only], "channel_not_found", NOW)
    assert change.row is not None and change.row.status == "failed"
    assert change.failure is None  # reported only if no member's own delivery is new
    (fallback,) = change.fallbacks
    assert fallback.positions == (0,) and fallback.channel is ChannelType.EMAIL
    assert fallback.channel_index == 1 and fallback.not_before == NOW
    assert (fallback.recipient_source, fallback.recipient_external_id) == (
        with_email.source,
        with_email.external_id,
    )
    assert fallback.id == lifecycle.individual_id(group, with_email)
    # Asked again (a redelivered result), the same ids: their rows are not new twice.
    again = lifecycle.refused(group, [with_email, slack_only], "channel_not_found", NOW)
    assert again.fallbacks == change.fallbacks
    # None of them new: the group's failure is reported to each member.
    failed = lifecycle.group_failed(group, "channel_not_found")
    assert failed.row is None and failed.intro is IntroEffect.FINISH
    assert failed.failure == lifecycle.Failure(1, "channel_not_found", permanent=True)


def test_anything_but_a_delivery_error_is_a_transient_failure() -> None:
    refused = PermanentDeliveryError("no")
    busy = TransientDeliveryError("busy")
    assert lifecycle.classify(refused) is refused and lifecycle.classify(busy) is busy
    bug = lifecycle.classify(KeyError("x"))
    assert isinstance(bug, TransientDeliveryError) and str(bug) == "unexpected KeyError"


def test_the_state_an_introduction_must_be_in_for_each_kind() -> None:
    assert lifecycle.wanted_state(DeliveryKind.ASK) is IntroState.ASKED
    assert lifecycle.wanted_state(DeliveryKind.INTRO) is IntroState.ACCEPTED


def test_the_sql_of_each_rule_is_built_from_its_python_rule() -> None:
    assert UNSENT == (Status.PENDING, Status.PARKED)
    assert UNSENT_SQL == "('pending', 'parked')"
    assert OPEN_STATES == (IntroState.ASKED, IntroState.ACCEPTED)
    assert OPEN_STATES_SQL == "('asked', 'accepted')"


def test_no_rule_is_written_twice_in_the_notifiers_sql() -> None:
    """The fragments services/notifier/store/rules.py builds appear nowhere else by hand."""
    root = Path(__file__).resolve().parents[2] / "services" / "notifier"
    fragments = ("'pending', 'parked'", "'asked', 'accepted'", "JOIN notifier.opt_outs")
    found = [
        (path.name, fragment)
        for path in root.rglob("*.py")
        for fragment in fragments
        if fragment in path.read_text()
    ]
    assert found == []
