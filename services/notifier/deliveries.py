"""Attempting deliveries: first attempts right after a proposal is recorded, later ones as the
job handler behind `delivery.requested.v1`. A delivery belongs to an introduction (an ask or the
introduction itself) or to a resource proposal (one message to one person, nothing to answer).

Per group of deliveries, two short transactions around the sends:

1. **Claim**: lock the introductions, then the delivery rows; drop stale or repeated copies
   (status or generation differ) and deliveries someone is sending right now (in flight); wait
   (via a delay queue) for quiet hours or pacing; render; record every attempt about to be made
   **in flight** (its idempotency key, when, a claim token) in one statement; commit. Nothing
   is sent before its in-flight record is committed.
2. **Send** the group's messages concurrently, holding no lock.
3. **Result**: in one transaction, record each attempt's outcome (only where the claim is still
   this attempt's) and queue what follows (the delivery event, a retry, the next channel, the
   parking) in the outbox. A database failure here resends nothing: the write is retried, and
   if the database stays away the results are held in memory and the deliveries stay in flight
   until they can be written.

A crash between 1 and 3 leaves deliveries in flight; once older than
ROAC_DELIVERY_IN_FLIGHT_SECONDS the reconciliation sweep (`run_reconciliation`, also run at
start) takes them up per channel (services/notifier/in_flight.py): resent under the same key,
resent once and counted as a possible duplicate, or parked. Never a whole group blindly.

Every decision about one delivery (send, wait, cancel, retry, park, fall back, give up) is the
lifecycle's (services/notifier/delivery_lifecycle.py, plain Python); this module reads, asks it,
writes what it decided and sends. What a delivery sends: services/notifier/outgoing.py. The
worker sees its store only through the slices it uses (services/notifier/ports.py), so its unit
tests run it on an in-memory fake (tests/unit/test_delivery_worker.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from services.notifier import delivery_lifecycle as lifecycle
from services.notifier import metrics
from services.notifier.channels.base import Channel, Outgoing, Sent
from services.notifier.clock import Clock
from services.notifier.delivery_lifecycle import (
    Failure,
    IntroEffect,
    Next,
    Outcome,
    RetryPolicy,
    Status,
    Transition,
    Verdict,
)
from services.notifier.delivery_policy import PermanentDeliveryError, TransientDeliveryError
from services.notifier.in_flight import Action, Decision, InFlight, UnkeyedPolicy
from services.notifier.links import LinkMaker
from services.notifier.optin import IntroState
from services.notifier.outgoing import OutgoingMaker
from services.notifier.planning import QuietHours
from services.notifier.rate_limit import RateLimiter
from services.notifier.rendering import MessageRenderer
from services.notifier.scheduling import JobCause, park, run_later, run_now
from services.notifier.store.rows import DeliveryRecord, IntroRecord, ProposalRecord
from shared.consumer import TRANSIENT_ERRORS
from shared.errors import TransientError
from shared.events import (
    ChannelType,
    ContactRef,
    DeliveryData,
    DeliveryFailed,
    DeliveryFailureData,
    DeliveryKind,
    DeliveryRequested,
    DeliverySucceeded,
    EventBatch,
    Participant,
)
from shared.metrics import EVENTS_CONSUMED

if TYPE_CHECKING:
    from services.notifier.ports import DeliveryStorage, DeliveryWork

__all__ = ["DeliveryWorker", "RetryPolicy"]

log = logging.getLogger("roac.notifier")

# Pacing waits up to this long in-process; longer waits go through a delay queue.
MAX_INLINE_WAIT_SECONDS = 2.0
# Orphaned in-flight deliveries taken up by one reconciliation pass.
RECONCILE_BATCH = 500
# A job names its delivery's job cause; the reconciliation sweep has none (the proposal's
# correlation id is used).
Item = tuple[UUID, int, "JobCause | None"]


class DeliveryWorker:
    def __init__(
        self,
        store: DeliveryStorage,
        channels: Mapping[ChannelType, Channel],
        renderer: MessageRenderer,
        links: LinkMaker,
        *,
        retry: RetryPolicy,
        quiet: QuietHours,
        limiter: RateLimiter,
        clock: Clock,
        rng: random.Random | None = None,
        group_size: int = 16,
        concurrent_groups: int = 4,
        in_flight_seconds: float = 60.0,
        unkeyed: UnkeyedPolicy = UnkeyedPolicy.RESEND_ONCE,
        result_retry_seconds: float | None = None,
    ) -> None:
        """`in_flight_seconds` (ROAC_DELIVERY_IN_FLIGHT_SECONDS): an in-flight record older
        than this is orphaned and reconciled; a send is cut off at half of it, so no live
        attempt is ever that old. `unkeyed` (ROAC_DELIVERY_UNKEYED_RECONCILE): the policy for
        channels without an idempotency key. `result_retry_seconds`: how long a result write
        is retried through a database outage before the results are held in memory (a third
        of the bound by default)."""
        self._store = store
        self._channels = channels
        self._outgoing = OutgoingMaker(renderer, links, clock)
        self._policy = lifecycle.Policy(retry, quiet, in_flight_seconds, unkeyed)
        self._limiter = limiter
        self._clock = clock
        self._rng = rng or random.Random()
        self._group_size = group_size
        self._concurrency = asyncio.Semaphore(concurrent_groups)
        self._send_limit = max(1.0, in_flight_seconds / 2)
        self._result_retry = (
            in_flight_seconds / 3 if result_retry_seconds is None else result_retry_seconds
        )
        # Outcomes of attempts whose result write failed: delivery id -> (attempt, outcome),
        # recorded when the delivery is next found in flight with the same claim.
        self._unrecorded: dict[UUID, tuple[_Ready, Sent | BaseException]] = {}
        # Claimed in flight (committed) by this process, result not recorded yet: the gauge.
        self._unfinished: set[UUID] = set()

    async def apply(self, batch: EventBatch) -> None:
        """Attempt every job of the message."""
        jobs = []
        for event in batch.events:
            if not isinstance(event, DeliveryRequested):
                raise ValueError(f"the delivery worker does not handle {event.type}")
            jobs.append(
                (
                    event.data.delivery_id,
                    event.data.generation,
                    JobCause(event.correlation_id, event.message_id),
                )
            )
        await self._in_groups(jobs)
        EVENTS_CONSUMED.labels("notifier", "delivery.requested.v1", "processed").inc(len(jobs))

    async def deliver_now(self, deliveries: Sequence[tuple[UUID, JobCause]]) -> None:
        """First attempts of deliveries created without a job (generation 0)."""
        await self._in_groups([(d, 0, cause) for d, cause in deliveries])

    async def reconcile_in_flight(self) -> int:
        """One reconciliation pass: deliveries in flight for longer than the bound (their
        sender died or gave up writing the result), and those whose results this process
        holds; each goes through the usual attempt, where the lifecycle decides. Returns how
        many were taken up."""
        before = self._clock.now() - timedelta(seconds=self._policy.in_flight_seconds)
        async with self._store.unit_of_work() as uow:
            found = dict(await uow.deliveries.orphaned_in_flight(before, RECONCILE_BATCH))
        for attempt, _ in list(self._unrecorded.values()):
            found.setdefault(attempt.delivery.id, attempt.delivery.generation)
        if found:
            log.info("reconciling %d deliveries left in flight", len(found))
            await self._in_groups([(d, g, None) for d, g in sorted(found.items())])
        return len(found)

    async def run_reconciliation(self) -> None:
        """At start and then periodically (a quarter of the bound, between 1 and 15 s)."""
        interval = max(1.0, min(15.0, self._policy.in_flight_seconds / 4))
        while True:
            try:
                await self.reconcile_in_flight()
            except Exception as exc:  # noqa: BLE001 - the sweep must outlive database outages
                log.warning("in-flight reconciliation failed, retrying: %r", exc)
            await asyncio.sleep(interval)

    async def _in_groups(self, items: Sequence[Item]) -> None:
        groups = [items[i : i + self._group_size] for i in range(0, len(items), self._group_size)]

        async def bounded(group: Sequence[Item]) -> None:
            async with self._concurrency:
                await self._attempt_group(group)

        results = await asyncio.gather(*(bounded(g) for g in groups), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    async def _attempt_group(self, items: Sequence[Item]) -> None:
        """Claim (one transaction: checks, and the in-flight records of the whole group in one
        statement), send all at once holding no lock, record the results (one transaction).
        A group shares its database work (about ten statements for up to
        ROAC_DELIVERY_GROUP_SIZE messages); what a crash can cause is per message: the
        attempts it caught in flight, each reconciled on its own."""
        ready = await self._claim(items)
        if not ready:
            return
        outcomes = await asyncio.gather(*(self._send(r) for r in ready), return_exceptions=True)
        await self._record_results(list(zip(ready, outcomes, strict=True)))

    # 1. Claim

    async def _claim(self, items: Sequence[Item]) -> list[_Ready]:
        async with self._store.unit_of_work() as uow:
            locked = await uow.deliveries.lock_with_proposals([item[0] for item in items])
            ready: list[_Ready] = []
            seen: set[UUID] = set()
            for delivery_id, generation, cause in items:
                entry = locked.get(delivery_id)
                if entry is None:
                    log.warning("job for unknown delivery %s dropped", delivery_id)
                    continue
                if delivery_id in seen:
                    _count(entry[1], "duplicate")
                    continue
                seen.add(delivery_id)
                cause = cause or JobCause(entry[0].correlation_id, None)
                prepared = await self._prepare(uow, *entry, generation, cause)
                if prepared is not None:
                    ready.append(prepared)
            claims = [
                (r.delivery.id, r.token, r.out.idempotency_key) for r in ready if r.known is None
            ]
            if claims:
                await uow.deliveries.mark_in_flight(claims, self._clock.now())
        # Committed: from here on a crash leaves each of these in flight, to be reconciled.
        self._unfinished.update(delivery_id for delivery_id, _, _ in claims)
        metrics.SENDS_IN_FLIGHT.set(len(self._unfinished))
        return ready

    async def _prepare(
        self,
        uow: DeliveryWork,
        proposal: ProposalRecord,
        delivery: DeliveryRecord,
        opted_out: bool,
        generation: int,
        cause: JobCause,
    ) -> _Ready | None:
        """One locked delivery: the lifecycle says whether it is sent now
        (`delivery_lifecycle.when_due`); what it decides instead is written here. None when
        there is nothing to send now."""
        people = [proposal.participants[p] for p in delivery.positions]
        now = self._clock.now()
        due = lifecycle.when_due(
            delivery,
            generation=generation,
            in_flight=self._in_flight(delivery, now),
            intro_state=proposal.state if isinstance(proposal, IntroRecord) else None,
            opted_out=opted_out,
            people=people,
            configured=self._channels.keys(),
            policy=self._policy,
            now=now,
        )
        if due.verdict is Verdict.RECORD:
            held, outcome = self._unrecorded.pop(delivery.id)
            metrics.RECONCILED.labels(delivery.channel, "recorded").inc()
            return replace(held, known=outcome)
        if due.verdict in (Verdict.DUPLICATE, Verdict.IN_FLIGHT):
            _count(delivery, due.verdict.value)
            return None
        delivery = due.delivery
        if due.settled is not None:
            await self._settle(uow, delivery, due.settled)
        if due.change is not None:
            await self._write(uow, proposal, delivery, people, due.change, cause)
            return None
        channel = ChannelType(delivery.channel)
        sender = self._channels[channel]
        out = self._outgoing.make(proposal, delivery, people, channel, *due.destination)
        rate_key = sender.rate_key(out)
        wait = 0.0
        if rate_key is not None:
            reserved = self._limiter.reserve(
                rate_key, self._clock.monotonic(), MAX_INLINE_WAIT_SECONDS
            )
            if reserved is None:
                later = self._limiter.next_free_in(rate_key, self._clock.monotonic())
                change = lifecycle.reschedule(delivery, later, self._clock.now())
                await self._write(uow, proposal, delivery, people, change, cause)
                return None
            wait = reserved
        return _Ready(proposal, delivery, people, out, sender, rate_key, cause, wait)

    def _in_flight(self, delivery: DeliveryRecord, now: datetime) -> InFlight | None:
        held = self._unrecorded.get(delivery.id)
        if held is not None and held[0].token != delivery.in_flight_token:
            # Our claim was superseded (reconciled by another notifier, or retried by an
            # operator): the result we hold is no longer ours to record.
            self._forget_held(delivery.id)
            held = None
        if delivery.in_flight_token is None:
            return None
        since = delivery.in_flight_since
        age = (now - since).total_seconds() if since is not None else math.inf
        known = held is not None
        return InFlight(age_seconds=age, resends=delivery.resends, outcome_known=known)

    async def _settle(
        self, uow: DeliveryWork, delivery: DeliveryRecord, decision: Decision
    ) -> None:
        """An orphaned attempt: recorded with an unknown outcome, then resent or parked."""
        resend = decision.action is Action.RESEND
        await uow.deliveries.settle_in_flight(
            delivery.id, delivery.channel, decision.reason, resend
        )
        log.warning("delivery %s: %s", delivery.id, decision.reason)
        metrics.RECONCILED.labels(delivery.channel, "resent" if resend else "parked").inc()
        if decision.possible_duplicate:
            metrics.POSSIBLE_DUPLICATES.labels(delivery.channel).inc()

    # 2. Send

    async def _send(self, ready: _Ready) -> Sent:
        if ready.known is not None:
            # Sent before, its result held: recorded now, nothing sent again.
            if isinstance(ready.known, BaseException):
                raise ready.known
            return ready.known
        if ready.wait > 0:
            await self._clock.sleep(ready.wait)
        started = time.perf_counter()
        try:
            # Cut off well within the in-flight bound: no live attempt is ever mistaken for an
            # orphaned one.
            async with asyncio.timeout(self._send_limit):
                return await ready.sender.send(ready.out)
        except TimeoutError as exc:
            raise TransientDeliveryError(f"no answer within {self._send_limit:g} s") from exc
        finally:
            ready.seconds = time.perf_counter() - started

    # 3. Result

    async def _record_results(self, results: list[tuple[_Ready, Sent | BaseException]]) -> None:
        """Write the group's results in one transaction, retrying through a database outage
        (never resending: the messages went out). If the database stays away, or one result
        cannot be written, the results are held: the deliveries stay in flight and are
        recorded when the reconciliation finds them (`Action.RECORD`)."""
        deadline = time.monotonic() + self._result_retry
        pause = 0.2
        while True:
            try:
                sent = await self._write_results(results)
                break
            except TRANSIENT_ERRORS as exc:
                if time.monotonic() >= deadline:
                    self._hold(results)
                    raise TransientError(
                        f"{len(results)} delivery results not written: {exc!r}; held in flight"
                    ) from exc
                log.warning("writing delivery results failed, retrying: %r", exc)
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)
            except Exception:
                # Not the database's availability: write each on its own, so one result that
                # cannot be written loses no other.
                log.exception("writing %d delivery results failed, one by one", len(results))
                sent = []
                for result in results:
                    try:
                        sent += await self._write_results([result])
                    except Exception:
                        log.exception("result of delivery %s held", result[0].delivery.id)
                        self._hold([result])
                break
        # Committed. What follows only informs.
        for r, outcome in sent:
            self._observe_sent(r)
            if outcome.hold_for and r.rate_key is not None:
                self._limiter.hold_until(r.rate_key, self._clock.monotonic() + outcome.hold_for)

    def _observe_sent(self, r: _Ready) -> None:
        metrics.SEND_SECONDS.labels(r.out.channel.value).observe(r.seconds)
        _count(r.delivery, "sent")
        metrics.ATTEMPTS.labels(r.delivery.channel, "sent").observe(r.delivery.attempts + 1)
        metrics.PROPOSAL_TO_DELIVERY_SECONDS.labels(r.delivery.kind.value).observe(
            (self._clock.now() - r.proposal.proposed_at).total_seconds()
        )
        # The pipeline's latency objective is about introductions (a resource's
        # proposal-to-delivery time is observed above, by kind).
        if isinstance(r.proposal, IntroRecord):
            intro = r.proposal
            first_message = r.delivery.kind is DeliveryKind.ASK or intro.mode == "direct"
            if first_message and intro.intro.triggered_at is not None:
                metrics.INGEST_TO_FIRST_MESSAGE_SECONDS.observe(
                    (self._clock.now() - intro.intro.triggered_at).total_seconds()
                )

    def _forget_held(self, delivery_id: UUID) -> None:
        self._unrecorded.pop(delivery_id, None)
        self._unfinished.discard(delivery_id)
        metrics.SENDS_IN_FLIGHT.set(len(self._unfinished))

    def _hold(self, results: Sequence[tuple[_Ready, Sent | BaseException]]) -> None:
        for r, outcome in results:
            self._unrecorded[r.delivery.id] = (r, outcome)

    async def _write_results(
        self, results: Sequence[tuple[_Ready, Sent | BaseException]]
    ) -> list[tuple[_Ready, Sent]]:
        """One transaction (committed without waiting for the disk: see the unit of work's
        `commit_without_waiting_for_disk`): introductions locked first (the lock order),
        successes in three statements, failures one by one (rare). Returns the successes
        recorded as sent."""
        async with self._store.unit_of_work() as uow:
            # Durable claims, then results whose loss in a host crash only means reconciling.
            await uow.commit_without_waiting_for_disk()
            await uow.intros.lock_many(
                r.proposal.id for r, _ in results if isinstance(r.proposal, IntroRecord)
            )
            sent = [(r, o) for r, o in results if isinstance(o, Sent)]
            recorded = await self._record_sent(uow, sent)
            for r, outcome in results:
                if not isinstance(outcome, Sent):
                    await self._record_failure(uow, r, outcome)
        for r, _ in results:
            self._unrecorded.pop(r.delivery.id, None)
            self._unfinished.discard(r.delivery.id)
        metrics.SENDS_IN_FLIGHT.set(len(self._unfinished))
        return recorded

    async def _record_sent(
        self, uow: DeliveryWork, sent: Sequence[tuple[_Ready, Sent]]
    ) -> list[tuple[_Ready, Sent]]:
        """Every success of the group in three statements: rows and attempts, delivery events,
        and introductions now fully delivered. Only attempts still holding their claim are
        recorded; one closed while in flight gets no event. Returns those recorded sent."""
        if not sent:
            return []
        # The key the provider may deduplicate on (the email's Message-ID derives from it).
        statuses = await uow.deliveries.mark_sent(
            [
                (
                    r.delivery.id,
                    r.delivery.attempts + 1,
                    r.out.channel.value,
                    r.out.idempotency_key,
                    r.token,
                )
                for r, _ in sent
            ]
        )
        sent = [(r, o) for r, o in sent if statuses.get(r.delivery.id) == Status.SENT]
        if not sent:
            return []
        await uow.outbox.enqueue(
            [
                DeliverySucceeded(
                    source="notifier",
                    correlation_id=r.cause.correlation_id,
                    causation_id=r.cause.causation_id,
                    data=DeliveryData(
                        **_delivery_fields(r.delivery, person, r.delivery.attempts + 1)
                    ),
                )
                for r, _ in sent
                for person in r.people
            ]
        )
        introduced = {r.proposal.id for r, _ in sent if r.delivery.kind is DeliveryKind.INTRO}
        if introduced:
            await uow.intros.finish_if_delivered(introduced, self._clock.now())
        return list(sent)

    async def _record_failure(self, uow: DeliveryWork, ready: _Ready, error: BaseException) -> None:
        failure = lifecycle.classify(error)
        if failure is not error:
            # A bug in a channel must not undo the others' successes: retried, and logged.
            log.error("delivery %s failed unexpectedly", ready.delivery.id, exc_info=error)
        delivery = await uow.deliveries.release_claim(ready.delivery.id, ready.token)
        if delivery is None:
            return  # reconciled meanwhile: the claim is no longer this attempt's
        outcome = "permanent" if isinstance(failure, PermanentDeliveryError) else "transient"
        await uow.deliveries.record_attempt(
            delivery.id, delivery.channel, outcome, str(failure)[:500]
        )
        change = lifecycle.after_failure(
            delivery,
            failure,
            people=ready.people,
            retry=self._policy.retry,
            now=self._clock.now(),
            rng=self._rng,
        )
        if change is not None:
            await self._write(uow, ready.proposal, delivery, ready.people, change, ready.cause)

    # Writing what the lifecycle decided

    async def _write(
        self,
        uow: DeliveryWork,
        proposal: ProposalRecord,
        delivery: DeliveryRecord,
        people: list[Participant],
        change: Transition,
        cause: JobCause,
    ) -> None:
        """The row, the job that follows, a group DM's fallbacks, the failure events and the
        introduction's change, in the caller's transaction; then the metrics."""
        if change.row is not None:
            await uow.deliveries.save(change.row, error=change.reason)
            row = change.row
            if change.next is Next.NOW:
                await run_now(uow, row.id, row.generation, cause)
            elif change.next is Next.LATER:
                await run_later(uow, row.id, row.generation, change.wait, cause)
            elif change.next is Next.PARK:
                await park(uow, row.id, row.generation, change.reason or "", cause)
        if change.fallbacks:
            new = await uow.deliveries.insert(change.fallbacks)
            for delivery_id in new:
                await run_now(uow, delivery_id, 0, cause)
            if not new:
                reason = change.reason or ""
                failed = lifecycle.group_failed(delivery, reason)
                await self._write(uow, proposal, delivery, people, failed, cause)
        if change.failure is not None:
            await self._failed_events(uow, delivery, people, change.failure, cause)
        if change.intro is IntroEffect.FAIL:
            # Someone cannot be asked: the introduction cannot happen.
            await uow.intros.set_state(proposal.id, IntroState.FAILED)
            await uow.deliveries.cancel_pending(proposal.id)
        elif change.intro is IntroEffect.FINISH and isinstance(proposal, IntroRecord):
            await uow.intros.finish_if_delivered({proposal.id}, self._clock.now())
        _observe(delivery, change)

    async def _failed_events(
        self,
        uow: DeliveryWork,
        delivery: DeliveryRecord,
        people: list[Participant],
        failure: Failure,
        cause: JobCause,
    ) -> None:
        await uow.outbox.enqueue(
            [
                DeliveryFailed(
                    source="notifier",
                    correlation_id=cause.correlation_id,
                    causation_id=cause.causation_id,
                    data=DeliveryFailureData(
                        **_delivery_fields(delivery, person, failure.attempts),
                        reason=failure.reason[:500],
                        permanent=failure.permanent,
                    ),
                )
                for person in people
            ]
        )


@dataclass
class _Ready:
    """A delivery checked and rendered, about to be sent."""

    proposal: ProposalRecord
    delivery: DeliveryRecord
    people: list[Participant]
    out: Outgoing
    sender: Channel
    rate_key: str | None
    cause: JobCause
    wait: float
    seconds: float = 0.0
    # This attempt's claim on the delivery row (its in-flight record).
    token: UUID = field(default_factory=uuid4)
    # The outcome, when it is already known (a result held after a failed write).
    known: Sent | BaseException | None = None


# roac_notifier_deliveries_total's outcome label of each transition (None: not counted; a
# refused group DM is counted by what follows for its members).
_LABELS: dict[Outcome, str | None] = {
    Outcome.GROUP_FALLBACK: None,
    Outcome.GROUP_FAILED: "failed",
}


def _count(delivery: DeliveryRecord, label: str) -> None:
    metrics.DELIVERIES.labels(delivery.channel, delivery.kind.value, label).inc()


def _observe(delivery: DeliveryRecord, change: Transition) -> None:
    """Metrics and the log line of a transition, by the delivery as it was before it."""
    label = _LABELS.get(change.outcome, change.outcome.value)
    if label is not None:
        _count(delivery, label)
    if change.outcome in (Outcome.PARKED, Outcome.FAILED) and change.failure is not None:
        metrics.ATTEMPTS.labels(delivery.channel, change.outcome.value).observe(
            change.failure.attempts
        )
        log.warning("delivery %s %s: %s", delivery.id, change.outcome.value, change.reason)


def _delivery_fields(
    delivery: DeliveryRecord, person: Participant, attempts: int
) -> dict[str, object]:
    return {
        "delivery_id": delivery.id,
        "proposal_id": delivery.proposal_id,
        "recipient": ContactRef(source=person.source, external_id=person.external_id),
        "channel": ChannelType(delivery.channel),
        "attempts": max(1, attempts),
        "kind": delivery.kind,
    }
