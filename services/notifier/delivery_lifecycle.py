"""A delivery's life, as plain Python (no database, no clock, no network): what a job that comes
due does to its delivery, and what an attempt's failure does. The delivery worker
(services/notifier/deliveries.py) reads the row under its lock, asks here, writes what comes
back and sends; the introduction's own life is services/notifier/optin.py.

Statuses: `pending` (to be attempted: now, after a wait, or in flight), then `sent`, `failed`
(refused for good on every channel, or no channel to try), `parked` (out of attempts, or an
orphaned attempt not resent: `roac deliveries retry` makes it pending again), `cancelled`
(its introduction closed, or its person erased) or `suppressed` (its person opted out).

When a job comes due (`when_due`), in this order:

1. an attempt recorded in flight is reconciled (services/notifier/in_flight.py): a result this
   process holds is recorded (`RECORD`); a young one is left to its sender (`IN_FLIGHT`); an
   orphaned one is settled (an attempt with an unknown outcome) and then parked or resent;
2. a job for a delivery no longer pending, or of another generation, does nothing (`DUPLICATE`);
3. a closed introduction cancels it, an opted-out person suppresses it;
4. quiet hours (or an earlier decision's `not_before`) reschedule it;
5. no address on its channel gives up; a channel not set up is a refusal (below);
6. otherwise it is attempted (`SEND`); the worker's pacing may still `reschedule` it.

After an attempt that failed (`after_failure`): a transient failure is retried after a backoff
until the attempts run out, then parked; a refusal moves to the person's next channel (a Slack
group DM: each member to their own next channel), and with none left the delivery fails; an
undeliverable ask fails its whole introduction.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from services.notifier.delivery_policy import (
    PermanentDeliveryError,
    TransientDeliveryError,
    delivery_id,
)
from services.notifier.in_flight import Action, Decision, InFlight, UnkeyedPolicy, reconcile
from services.notifier.optin import IntroState
from services.notifier.planning import PlannedDelivery, QuietHours
from services.notifier.retry_policy import retry_delay
from services.notifier.store.rows import DeliveryRecord
from shared.events import ChannelAddress, ChannelType, DeliveryKind, Participant


class Status(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    PARKED = "parked"
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"


# Not sent and not closed: what an erasure cancels, and what keeps an introduction from being
# `introduced` (the stores' SQL uses this tuple: services/notifier/store/rules.py).
UNSENT = (Status.PENDING, Status.PARKED)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_delay_seconds: float


@dataclass(frozen=True)
class Policy:
    """The operator's settings the lifecycle decides by."""

    retry: RetryPolicy
    quiet: QuietHours
    in_flight_seconds: float = 60.0  # ROAC_DELIVERY_IN_FLIGHT_SECONDS
    unkeyed: UnkeyedPolicy = UnkeyedPolicy.RESEND_ONCE  # ROAC_DELIVERY_UNKEYED_RECONCILE


class Outcome(StrEnum):
    """What a transition did (the worker counts each: roac_notifier_deliveries_total)."""

    RETRIED = "retried"  # a transient failure: again after a backoff
    PARKED = "parked"  # out of attempts, or an orphaned attempt not resent
    FALLBACK = "fallback"  # refused: the person's next channel
    FAILED = "failed"  # no channel left: given up
    GROUP_FALLBACK = "group_fallback"  # a group DM refused: each member on their next channel
    GROUP_FAILED = "group_failed"  # ... and none of them had one
    RESCHEDULED = "rescheduled"  # not yet: quiet hours or pacing
    CANCELLED = "cancelled"  # its introduction closed
    SUPPRESSED = "suppressed"  # its person opted out


class Next(StrEnum):
    """The job that follows a transition."""

    NOTHING = "nothing"
    NOW = "now"  # on the delivery queue
    LATER = "later"  # through a delay queue, after `wait` seconds
    PARK = "park"  # into the delivery queue's dead-letter queue, with the reason


class IntroEffect(StrEnum):
    """What a transition does to the delivery's introduction."""

    NONE = "none"
    FINISH = "finish"  # it may now be delivered to everyone: `introduced` if so
    FAIL = "fail"  # an ask cannot be delivered: the introduction failed, all else cancelled


@dataclass(frozen=True)
class Failure:
    """`delivery.failed.v1` to emit, one per person of the delivery."""

    attempts: int
    reason: str
    permanent: bool


@dataclass(frozen=True)
class Transition:
    """What the lifecycle decided for one delivery: the row to save (None: unchanged) with its
    `reason` (the row's last error; the parking header), the job that follows, the failure to
    report, the introduction's change, and for a refused group DM the members' own deliveries
    (when none of them is new, `group_failed` follows)."""

    outcome: Outcome
    row: DeliveryRecord | None
    reason: str | None = None
    next: Next = Next.NOTHING
    wait: float = 0.0
    failure: Failure | None = None
    intro: IntroEffect = IntroEffect.NONE
    fallbacks: tuple[PlannedDelivery, ...] = ()


class Verdict(StrEnum):
    SEND = "send"  # attempt it now
    RECORD = "record"  # the result this process holds is recorded; nothing is sent
    DUPLICATE = "duplicate"  # a stale or repeated job: nothing to do
    IN_FLIGHT = "in_flight"  # someone is sending it right now: nothing to do
    CHANGE = "change"  # not sent now: `change` says what instead


@dataclass(frozen=True)
class Due:
    """What a job that came due does with its delivery."""

    verdict: Verdict
    delivery: DeliveryRecord  # the row as it now stands (after settling an orphaned attempt)
    # An orphaned attempt settled first (recorded as one attempt with an unknown outcome),
    # and whether it is resent: the reconciliation's decision.
    settled: Decision | None = None
    change: Transition | None = None
    # With SEND: the address on the delivery's channel, and a Slack group DM's member ids.
    destination: tuple[str, tuple[str, ...]] = ("", ())


def wanted_state(kind: DeliveryKind) -> IntroState:
    """The state an introduction must still be in for a message of this kind to go out (a
    check-in: delivered)."""
    if kind in (DeliveryKind.CHECKIN, DeliveryKind.CHECKIN_AGAIN):
        return IntroState.INTRODUCED
    return IntroState.ASKED if kind is DeliveryKind.ASK else IntroState.ACCEPTED


def destination(
    delivery: DeliveryRecord, people: Sequence[Participant]
) -> tuple[str, tuple[str, ...]] | None:
    """The address on the delivery's current channel, and for a Slack group DM its members'
    ids; None when there is none."""
    if len(people) > 1:
        ids = tuple(_first_of(p.channels, ChannelType.SLACK) for p in people)
        if any(i is None for i in ids):
            return None
        members = tuple(i for i in ids if i is not None)
        return members[0], members
    channels = people[0].channels
    if delivery.channel_index >= len(channels):
        return None
    return channels[delivery.channel_index].address, ()


def when_due(
    delivery: DeliveryRecord,
    *,
    generation: int,
    in_flight: InFlight | None,
    intro_state: IntroState | None,
    opted_out: bool,
    people: Sequence[Participant],
    configured: Collection[ChannelType],
    policy: Policy,
    now: datetime,
) -> Due:
    """A job for `delivery` (found under its lock) came due: `generation` is the job's,
    `in_flight` the row's in-flight record (None: none), `intro_state` its introduction's state
    (None: a resource), `people` whom it goes to, `configured` the channels set up."""
    channel = ChannelType(delivery.channel)
    decision = reconcile(
        channel, in_flight, bound_seconds=policy.in_flight_seconds, unkeyed=policy.unkeyed
    )
    if decision.action is Action.RECORD:
        return Due(Verdict.RECORD, delivery)
    if delivery.status != Status.PENDING or delivery.generation != generation:
        return Due(Verdict.DUPLICATE, delivery)
    if decision.action is Action.WAIT:
        return Due(Verdict.IN_FLIGHT, delivery)
    settled = None
    if decision.action is not Action.SEND:
        # Orphaned in flight: the attempt counts, its outcome unknown.
        settled = decision
        resend = decision.action is Action.RESEND
        delivery = replace(
            delivery,
            attempts=delivery.attempts + 1,
            resends=delivery.resends + resend,
            in_flight_since=None,
            in_flight_token=None,
        )
        if not resend:
            return Due(
                Verdict.CHANGE,
                delivery,
                settled,
                park(delivery, delivery.attempts, decision.reason),
            )
    change = _held_back(delivery, intro_state, opted_out, people[0], policy, now)
    if change is None:
        to = destination(delivery, people)
        if to is None:
            change = give_up(delivery, "no channel left to try")
        elif channel not in configured:
            change = refused(delivery, people, f"{channel.value} is not set up", now)
        else:
            return Due(Verdict.SEND, delivery, settled, destination=to)
    return Due(Verdict.CHANGE, delivery, settled, change)


def _held_back(
    delivery: DeliveryRecord,
    intro_state: IntroState | None,
    opted_out: bool,
    first: Participant,
    policy: Policy,
    now: datetime,
) -> Transition | None:
    """Not to be sent (its introduction closed, its person opted out), or not yet (quiet hours
    of its first recipient, or a `not_before` still ahead)."""
    if intro_state is not None and intro_state is not wanted_state(delivery.kind):
        return close(delivery, Status.CANCELLED)
    if opted_out:
        return close(delivery, Status.SUPPRESSED)
    due = max(delivery.not_before, policy.quiet.earliest(now, first.timezone))
    if due > now:
        return reschedule(delivery, (due - now).total_seconds(), now)
    return None


def classify(error: BaseException) -> PermanentDeliveryError | TransientDeliveryError:
    """A failed send as the lifecycle knows failures: anything else (a bug in a channel) is
    transient, so it is retried and cannot undo the group's other results."""
    if isinstance(error, PermanentDeliveryError | TransientDeliveryError):
        return error
    return TransientDeliveryError(f"unexpected {type(error).__name__}")


def after_failure(
    delivery: DeliveryRecord,
    error: PermanentDeliveryError | TransientDeliveryError,
    *,
    people: Sequence[Participant],
    retry: RetryPolicy,
    now: datetime,
    rng: random.Random,
) -> Transition | None:
    """An attempt failed; `delivery` is its row as the attempt's claim was released. None when
    it was closed while in flight (declined, opted out, erased): nothing follows."""
    if delivery.status != Status.PENDING:
        return None
    if isinstance(error, PermanentDeliveryError):
        return refused(delivery, people, str(error), now)
    return retry_or_park(delivery, error, retry=retry, now=now, rng=rng)


def retry_or_park(
    delivery: DeliveryRecord,
    error: TransientDeliveryError,
    *,
    retry: RetryPolicy,
    now: datetime,
    rng: random.Random,
) -> Transition:
    """A transient failure: again after a backoff (never sooner than the provider's
    Retry-After), or parked once this was the last attempt allowed."""
    attempts = delivery.attempts + 1
    if attempts >= retry.max_attempts:
        return park(delivery, attempts, f"gave up after {attempts} attempts: {error}")
    wait = retry_delay(
        attempts,
        base=retry.base_seconds,
        cap=retry.max_delay_seconds,
        retry_after=error.retry_after,
        rng=rng,
    )
    row = replace(
        delivery,
        status=Status.PENDING,
        attempts=attempts,
        generation=delivery.generation + 1,
        not_before=now + timedelta(seconds=wait),
    )
    return Transition(Outcome.RETRIED, row, str(error)[:500], Next.LATER, wait)


def park(delivery: DeliveryRecord, attempts: int, reason: str) -> Transition:
    """Into the dead-letter queue, where `roac deliveries retry` finds it; reported as a failure
    that is not permanent."""
    row = replace(
        delivery, status=Status.PARKED, attempts=attempts, generation=delivery.generation + 1
    )
    return Transition(
        Outcome.PARKED,
        row,
        reason,
        Next.PARK,
        failure=Failure(attempts, reason, permanent=False),
    )


def refused(
    delivery: DeliveryRecord, people: Sequence[Participant], reason: str, now: datetime
) -> Transition:
    """Refused for good on this channel: the person's next channel, or each member's own after
    a group DM; with none left, given up."""
    if len(people) > 1:
        fallbacks = tuple(
            PlannedDelivery(
                id=individual_id(delivery, person),
                proposal_id=delivery.proposal_id,
                kind=delivery.kind,
                positions=(position,),
                recipient_source=person.source,
                recipient_external_id=person.external_id,
                channel=person.channels[1].type,
                not_before=now,
                channel_index=1,
            )
            for position, person in zip(delivery.positions, people, strict=True)
            if len(person.channels) > 1
        )
        closed = _closed_row(delivery, Status.FAILED)
        if not fallbacks:
            return replace(group_failed(delivery, reason), row=closed, reason=reason)
        return Transition(Outcome.GROUP_FALLBACK, closed, reason, fallbacks=fallbacks)
    channels = people[0].channels
    next_index = delivery.channel_index + 1
    if next_index < len(channels):
        row = replace(
            delivery,
            status=Status.PENDING,
            attempts=0,
            channel=channels[next_index].type.value,
            channel_index=next_index,
            generation=delivery.generation + 1,
            not_before=now,
        )
        return Transition(Outcome.FALLBACK, row, reason, Next.NOW)
    return give_up(delivery, reason)


def group_failed(delivery: DeliveryRecord, reason: str) -> Transition:
    """A refused group DM none of whose members has a channel of their own left (the group's
    row already closed): reported as failed to each."""
    return Transition(
        Outcome.GROUP_FAILED,
        None,
        failure=Failure(delivery.attempts + 1, reason, permanent=True),
        intro=_finish(delivery),
    )


def give_up(delivery: DeliveryRecord, reason: str) -> Transition:
    """No channel left to try: failed for good. An ask that cannot be delivered fails its
    introduction (it cannot happen); anything else may leave its introduction delivered."""
    attempts = delivery.attempts + 1
    return Transition(
        Outcome.FAILED,
        _closed_row(delivery, Status.FAILED),
        reason,
        failure=Failure(attempts, reason, permanent=True),
        intro=IntroEffect.FAIL if delivery.kind is DeliveryKind.ASK else _finish(delivery),
    )


def reschedule(delivery: DeliveryRecord, wait: float, now: datetime) -> Transition:
    """Not yet (quiet hours, pacing): a new generation, due after `wait` seconds."""
    row = replace(
        delivery,
        status=Status.PENDING,
        generation=delivery.generation + 1,
        not_before=now + timedelta(seconds=wait),
    )
    return Transition(Outcome.RESCHEDULED, row, None, Next.LATER, wait)


def close(delivery: DeliveryRecord, status: Status) -> Transition:
    """Not to be sent: cancelled (its introduction closed) or suppressed (its person opted out)."""
    outcome = Outcome.CANCELLED if status is Status.CANCELLED else Outcome.SUPPRESSED
    return Transition(outcome, _closed_row(delivery, status))


def individual_id(delivery: DeliveryRecord, person: Participant) -> UUID:
    """A group DM member's own delivery of the same message."""
    return delivery_id(
        delivery.proposal_id, delivery.kind.value, f"{person.source}/{person.external_id}"
    )


def _closed_row(delivery: DeliveryRecord, status: Status) -> DeliveryRecord:
    # A failure counts the attempt that failed.
    attempts = delivery.attempts + (1 if status is Status.FAILED else 0)
    return replace(delivery, status=status, attempts=attempts)


def _finish(delivery: DeliveryRecord) -> IntroEffect:
    return IntroEffect.FINISH if delivery.kind is DeliveryKind.INTRO else IntroEffect.NONE


def _first_of(channels: list[ChannelAddress], kind: ChannelType) -> str | None:
    return next((c.address for c in channels if c.type is kind), None)
