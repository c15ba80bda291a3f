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
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from services.notifier import metrics
from services.notifier.channels.base import Channel, Outgoing, Sent
from services.notifier.clock import Clock
from services.notifier.delivery_policy import (
    PermanentDeliveryError,
    TransientDeliveryError,
    delivery_id,
)
from services.notifier.in_flight import Action, InFlight, UnkeyedPolicy, reconcile
from services.notifier.links import LinkAction, LinkMaker
from services.notifier.optin import IntroState
from services.notifier.planning import PlannedDelivery, QuietHours
from services.notifier.rate_limit import RateLimiter
from services.notifier.rendering import Links, MessageRenderer, Rendered, Style, Trusted
from services.notifier.retry_policy import retry_delay
from services.notifier.scheduling import JobCause, park, run_later, run_now
from services.notifier.store import IntroRecord, ProposalRecord, ResourceRecord
from shared.consumer import TRANSIENT_ERRORS
from shared.errors import TransientError
from shared.events import (
    ChannelAddress,
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
    from services.notifier.store import DeliveryRecord, NotifierStore, NotifierUnitOfWork

log = logging.getLogger("roac.notifier")

# Pacing waits up to this long in-process; longer waits go through a delay queue.
MAX_INLINE_WAIT_SECONDS = 2.0
# Orphaned in-flight deliveries taken up by one reconciliation pass.
RECONCILE_BATCH = 500
# A job names its delivery's job cause; the reconciliation sweep has none (the proposal's
# correlation id is used).
Item = tuple[UUID, int, "JobCause | None"]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_delay_seconds: float


class DeliveryWorker:
    def __init__(
        self,
        store: NotifierStore,
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
        self._renderer = renderer
        self._links = links
        self._retry = retry
        self._quiet = quiet
        self._limiter = limiter
        self._clock = clock
        self._rng = rng or random.Random()
        self._group_size = group_size
        self._concurrency = asyncio.Semaphore(concurrent_groups)
        self._in_flight_seconds = in_flight_seconds
        self._send_limit = max(1.0, in_flight_seconds / 2)
        self._unkeyed = unkeyed
        self._result_retry = (
            in_flight_seconds / 3 if result_retry_seconds is None else result_retry_seconds
        )
        # Outcomes of attempts whose result write failed: delivery id -> (attempt, outcome),
        # recorded when the delivery is next found in flight with the same claim.
        self._unrecorded: dict[UUID, tuple[_Ready, Sent | BaseException]] = {}

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
        holds; each goes through the usual attempt, where `in_flight.reconcile` decides.
        Returns how many were taken up."""
        before = self._clock.now() - timedelta(seconds=self._in_flight_seconds)
        async with self._store.unit_of_work() as uow:
            found = dict(await uow.orphaned_in_flight(before, RECONCILE_BATCH))
        for attempt, _ in list(self._unrecorded.values()):
            found.setdefault(attempt.delivery.id, attempt.delivery.generation)
        if found:
            log.info("reconciling %d deliveries left in flight", len(found))
            await self._in_groups([(d, g, None) for d, g in sorted(found.items())])
        return len(found)

    async def run_reconciliation(self) -> None:
        """At start and then periodically (a quarter of the bound, between 1 and 15 s)."""
        interval = max(1.0, min(15.0, self._in_flight_seconds / 4))
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

    async def _claim(self, items: Sequence[Item]) -> list[_Ready]:
        async with self._store.unit_of_work() as uow:
            locked = await uow.lock_for_deliveries([item[0] for item in items])
            ready: list[_Ready] = []
            seen: set[UUID] = set()
            for delivery_id, generation, cause in items:
                entry = locked.get(delivery_id)
                if entry is None:
                    log.warning("job for unknown delivery %s dropped", delivery_id)
                    continue
                if delivery_id in seen:
                    metrics.DELIVERIES.labels(
                        entry[1].channel, entry[1].kind.value, "duplicate"
                    ).inc()
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
                await uow.mark_in_flight(claims, self._clock.now())
        # Committed: from here on a crash leaves each of these in flight, to be reconciled.
        return ready

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
            metrics.SEND_SECONDS.labels(r.out.channel.value).observe(r.seconds)
            metrics.DELIVERIES.labels(r.delivery.channel, r.delivery.kind.value, "sent").inc()
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
            if outcome.hold_for and r.rate_key is not None:
                self._limiter.hold_until(r.rate_key, self._clock.monotonic() + outcome.hold_for)

    def _hold(self, results: Sequence[tuple[_Ready, Sent | BaseException]]) -> None:
        for r, outcome in results:
            self._unrecorded[r.delivery.id] = (r, outcome)

    async def _write_results(
        self, results: Sequence[tuple[_Ready, Sent | BaseException]]
    ) -> list[tuple[_Ready, Sent]]:
        """One transaction (committed without waiting for the disk: see the store's
        `commit_without_waiting_for_disk`): introductions locked first (the lock order),
        successes in three statements, failures one by one (rare). Returns the successes
        recorded as sent."""
        async with self._store.unit_of_work() as uow:
            # Durable claims, then results whose loss in a host crash only means reconciling.
            await uow.commit_without_waiting_for_disk()
            await uow.lock_intros(
                r.proposal.id for r, _ in results if isinstance(r.proposal, IntroRecord)
            )
            sent = [(r, o) for r, o in results if isinstance(o, Sent)]
            recorded = await self._record_sent(uow, sent)
            for r, outcome in results:
                if not isinstance(outcome, Sent):
                    await self._record_failure(uow, r, outcome)
        for r, _ in results:
            self._unrecorded.pop(r.delivery.id, None)
        return recorded

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

    async def _prepare(
        self,
        uow: NotifierUnitOfWork,
        proposal: ProposalRecord,
        delivery: DeliveryRecord,
        opted_out: bool,
        generation: int,
        cause: JobCause,
    ) -> _Ready | None:
        """Check one locked delivery; None when there is nothing to send now (a stale or
        repeated job, a send in flight, a closed introduction, an opted-out person, a wait for
        quiet hours or pacing, no channel left): each of those is recorded here. A delivery
        left in flight is reconciled first (services/notifier/in_flight.py)."""
        channel_type = ChannelType(delivery.channel)
        decision = reconcile(
            channel_type,
            self._in_flight(delivery),
            bound_seconds=self._in_flight_seconds,
            unkeyed=self._unkeyed,
        )
        if decision.action is Action.RECORD:
            held, outcome = self._unrecorded.pop(delivery.id)
            metrics.RECONCILED.labels(delivery.channel, "recorded").inc()
            return replace(held, known=outcome)
        if delivery.status != "pending" or delivery.generation != generation:
            metrics.DELIVERIES.labels(delivery.channel, delivery.kind.value, "duplicate").inc()
            return None
        if decision.action is Action.WAIT:
            metrics.DELIVERIES.labels(delivery.channel, delivery.kind.value, "in_flight").inc()
            return None
        if decision.action is not Action.SEND:
            # Orphaned in flight: its outcome is unknown, recorded as such.
            resend = decision.action is Action.RESEND
            await uow.settle_in_flight(delivery.id, delivery.channel, decision.reason, resend)
            delivery = replace(
                delivery,
                attempts=delivery.attempts + 1,
                resends=delivery.resends + resend,
                in_flight_since=None,
                in_flight_token=None,
            )
            log.warning("delivery %s: %s", delivery.id, decision.reason)
            if not resend:
                metrics.RECONCILED.labels(delivery.channel, "parked").inc()
                people = [proposal.participants[p] for p in delivery.positions]
                await self._park(uow, delivery, people, delivery.attempts, decision.reason, cause)
                return None
            metrics.RECONCILED.labels(delivery.channel, "resent").inc()
            if decision.possible_duplicate:
                metrics.POSSIBLE_DUPLICATES.labels(delivery.channel).inc()
        if isinstance(proposal, IntroRecord):
            wanted = IntroState.ASKED if delivery.kind is DeliveryKind.ASK else IntroState.ACCEPTED
            if proposal.state is not wanted:
                await self._close(uow, delivery, "cancelled")
                return None
        if opted_out:
            await self._close(uow, delivery, "suppressed")
            return None
        people = [proposal.participants[p] for p in delivery.positions]
        now = self._clock.now()
        due = max(delivery.not_before, self._quiet.earliest(now, people[0].timezone))
        if due > now:
            await self._reschedule(uow, delivery, (due - now).total_seconds(), cause)
            return None
        target = self._target(delivery, people)
        if target is None:
            await self._give_up(uow, proposal, delivery, "no channel left to try", cause)
            return None
        address, group = target
        channel = ChannelType(delivery.channel)
        sender = self._channels.get(channel)
        if sender is None:
            await self._permanent(
                uow, proposal, delivery, people, f"{channel.value} is not set up", cause
            )
            return None
        if isinstance(proposal, ResourceRecord):
            out = self._resource_outgoing(proposal, delivery, channel, address)
        else:
            out = self._outgoing(proposal, delivery, people, channel, address, group)
        rate_key = sender.rate_key(out)
        wait = 0.0
        if rate_key is not None:
            reserved = self._limiter.reserve(
                rate_key, self._clock.monotonic(), MAX_INLINE_WAIT_SECONDS
            )
            if reserved is None:
                later = self._limiter.next_free_in(rate_key, self._clock.monotonic())
                await self._reschedule(uow, delivery, later, cause)
                return None
            wait = reserved
        return _Ready(proposal, delivery, people, out, sender, rate_key, cause, wait)

    def _in_flight(self, delivery: DeliveryRecord) -> InFlight | None:
        if delivery.in_flight_token is None:
            return None
        since = delivery.in_flight_since
        age = (self._clock.now() - since).total_seconds() if since is not None else math.inf
        held = self._unrecorded.get(delivery.id)
        known = held is not None and held[0].token == delivery.in_flight_token
        return InFlight(age_seconds=age, resends=delivery.resends, outcome_known=known)

    async def _record_failure(
        self, uow: NotifierUnitOfWork, ready: _Ready, error: BaseException
    ) -> None:
        if not isinstance(error, PermanentDeliveryError | TransientDeliveryError):
            # A bug in a channel must not undo the others' successes: retried, and logged.
            log.error("delivery %s failed unexpectedly", ready.delivery.id, exc_info=error)
            error = TransientDeliveryError(f"unexpected {type(error).__name__}")
        delivery = await uow.release_claim(ready.delivery.id, ready.token)
        if delivery is None:
            return  # reconciled meanwhile: the claim is no longer this attempt's
        outcome = "permanent" if isinstance(error, PermanentDeliveryError) else "transient"
        await uow.record_attempt(delivery.id, delivery.channel, outcome, str(error)[:500])
        if delivery.status != "pending":
            return  # closed while in flight (declined, opted out, erased): nothing follows
        ready = replace(ready, delivery=delivery)
        if isinstance(error, PermanentDeliveryError):
            await self._permanent(
                uow, ready.proposal, delivery, ready.people, str(error), ready.cause
            )
        else:
            await self._transient(uow, delivery, ready.people, error, ready.cause)

    def _target(
        self, delivery: DeliveryRecord, people: list[Participant]
    ) -> tuple[str, tuple[str, ...]] | None:
        """The address to send to on the delivery's current channel (and the Slack group)."""
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

    def _outgoing(
        self,
        intro: IntroRecord,
        delivery: DeliveryRecord,
        people: list[Participant],
        channel: ChannelType,
        address: str,
        group: tuple[str, ...],
    ) -> Outgoing:
        person = people[0]
        now = self._clock.now().timestamp()
        asks_end = intro.asked_until.timestamp() if intro.asked_until else now
        unsubscribe = (
            "" if group else self._links.unsubscribe(person.source, person.external_id, now)
        )
        links = Links(
            accept=Trusted(
                self._links.answer(
                    LinkAction.ACCEPT, intro.id, person.source, person.external_id, asks_end
                )
            )
            if delivery.kind is DeliveryKind.ASK
            else None,
            decline=Trusted(
                self._links.answer(
                    LinkAction.DECLINE, intro.id, person.source, person.external_id, asks_end
                )
            )
            if delivery.kind is DeliveryKind.ASK
            else None,
            unsubscribe=Trusted(unsubscribe),
        )
        rendered = self._renderer.render(delivery.kind, intro.intro, delivery.positions, links)
        payload = {
            "version": 1,
            "type": f"roac.{delivery.kind.value}",
            "delivery_id": str(delivery.id),
            "proposal_id": str(intro.id),
            "recipient": {
                "source": person.source,
                "external_id": person.external_id,
                "name": person.name,
            },
            "subject": rendered.subject,
            "text": rendered.chat[Style.PLAIN],
            "topics": [t.topic for t in intro.intro.topics],
            "links": {
                "accept": links.accept,
                "decline": links.decline,
                "unsubscribe": links.unsubscribe or None,
            },
        }
        if delivery.kind is DeliveryKind.INTRO:
            payload["participants"] = [
                {
                    "source": p.source,
                    "external_id": p.external_id,
                    "name": p.name,
                    "organization": p.organization,
                }
                for p in intro.intro.participants
            ]
        return Outgoing(
            delivery_id=delivery.id,
            idempotency_key=f"{delivery.id}.{delivery.channel_index}",
            proposal_id=intro.id,
            kind=delivery.kind,
            channel=channel,
            address=address,
            rendered=rendered,
            unsubscribe_url=unsubscribe,
            to_name=person.name,
            group=group,
            payload=payload,
        )

    def _resource_outgoing(
        self,
        proposal: ResourceRecord,
        delivery: DeliveryRecord,
        channel: ChannelType,
        address: str,
    ) -> Outgoing:
        """A resource for its one recipient: no answer links, the unsubscribe link as always."""
        resource = proposal.resource
        person = resource.recipient
        unsubscribe = self._links.unsubscribe(
            person.source, person.external_id, self._clock.now().timestamp()
        )
        rendered = self._renderer.render_resource(
            resource, Links(accept=None, decline=None, unsubscribe=Trusted(unsubscribe))
        )
        return Outgoing(
            delivery_id=delivery.id,
            idempotency_key=f"{delivery.id}.{delivery.channel_index}",
            proposal_id=proposal.id,
            kind=delivery.kind,
            channel=channel,
            address=address,
            rendered=rendered,
            unsubscribe_url=unsubscribe,
            to_name=person.name,
            payload=_resource_payload(proposal, delivery, rendered, unsubscribe),
        )

    async def _record_sent(
        self, uow: NotifierUnitOfWork, sent: Sequence[tuple[_Ready, Sent]]
    ) -> list[tuple[_Ready, Sent]]:
        """Every success of the group in three statements: rows and attempts, delivery events,
        and introductions now fully delivered. Only attempts still holding their claim are
        recorded; one closed while in flight gets no event. Returns those recorded sent."""
        if not sent:
            return []
        # The key the provider may deduplicate on (the email's Message-ID derives from it).
        statuses = await uow.mark_sent(
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
        sent = [(r, o) for r, o in sent if statuses.get(r.delivery.id) == "sent"]
        if not sent:
            return []
        await uow.enqueue(
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
            await uow.finish_if_delivered(introduced)
        return list(sent)

    async def _transient(
        self,
        uow: NotifierUnitOfWork,
        delivery: DeliveryRecord,
        people: list[Participant],
        exc: TransientDeliveryError,
        cause: JobCause,
    ) -> None:
        attempts = delivery.attempts + 1
        generation = delivery.generation + 1
        if attempts >= self._retry.max_attempts:
            reason = f"gave up after {attempts} attempts: {exc}"
            await self._park(uow, delivery, people, attempts, reason, cause)
            return
        wait = retry_delay(
            attempts,
            base=self._retry.base_seconds,
            cap=self._retry.max_delay_seconds,
            retry_after=exc.retry_after,
            rng=self._rng,
        )
        await uow.save_delivery(
            replace(
                delivery,
                status="pending",
                attempts=attempts,
                generation=generation,
                not_before=self._clock.now() + _seconds(wait),
            ),
            error=str(exc)[:500],
        )
        await run_later(uow, delivery.id, generation, wait, cause)
        metrics.DELIVERIES.labels(delivery.channel, delivery.kind.value, "retried").inc()

    async def _park(
        self,
        uow: NotifierUnitOfWork,
        delivery: DeliveryRecord,
        people: list[Participant],
        attempts: int,
        reason: str,
        cause: JobCause,
    ) -> None:
        """Into the dead-letter queue, where `roac deliveries retry` finds it."""
        generation = delivery.generation + 1
        await uow.save_delivery(
            replace(delivery, status="parked", attempts=attempts, generation=generation),
            error=reason[:500],
        )
        await park(uow, delivery.id, generation, reason, cause)
        await self._failed_events(
            uow, delivery, people, attempts, reason, permanent=False, cause=cause
        )
        metrics.DELIVERIES.labels(delivery.channel, delivery.kind.value, "parked").inc()
        metrics.ATTEMPTS.labels(delivery.channel, "parked").observe(attempts)
        log.warning("delivery %s parked: %s", delivery.id, reason)

    async def _permanent(
        self,
        uow: NotifierUnitOfWork,
        proposal: ProposalRecord,
        delivery: DeliveryRecord,
        people: list[Participant],
        reason: str,
        cause: JobCause,
    ) -> None:
        """Try the next channel: the person's next one, or each member's own after a group DM."""
        if len(people) > 1:
            fallbacks = [
                PlannedDelivery(
                    id=_individual_id(delivery, person),
                    proposal_id=delivery.proposal_id,
                    kind=delivery.kind,
                    positions=(position,),
                    recipient_source=person.source,
                    recipient_external_id=person.external_id,
                    channel=person.channels[1].type,
                    not_before=self._clock.now(),
                    channel_index=1,
                )
                for position, person in zip(delivery.positions, people, strict=True)
                if len(person.channels) > 1
            ]
            await self._close(uow, delivery, "failed", reason)
            new = await uow.insert_deliveries(fallbacks)
            for delivery_id in new:
                await run_now(uow, delivery_id, 0, cause)
            if not new:
                await self._failed_events(
                    uow, delivery, people, delivery.attempts + 1, reason, True, cause
                )
                await self._maybe_finish(uow, proposal)
            return
        channels = people[0].channels
        next_index = delivery.channel_index + 1
        if next_index < len(channels):
            generation = delivery.generation + 1
            await uow.save_delivery(
                replace(
                    delivery,
                    status="pending",
                    attempts=0,
                    channel=channels[next_index].type.value,
                    channel_index=next_index,
                    generation=generation,
                    not_before=self._clock.now(),
                ),
                error=reason[:500],
            )
            await run_now(uow, delivery.id, generation, cause)
            metrics.DELIVERIES.labels(delivery.channel, delivery.kind.value, "fallback").inc()
            return
        await self._give_up(uow, proposal, delivery, reason, cause, people)

    async def _give_up(
        self,
        uow: NotifierUnitOfWork,
        proposal: ProposalRecord,
        delivery: DeliveryRecord,
        reason: str,
        cause: JobCause,
        people: list[Participant] | None = None,
    ) -> None:
        people = people or [proposal.participants[p] for p in delivery.positions]
        attempts = delivery.attempts + 1
        await self._close(uow, delivery, "failed", reason)
        await self._failed_events(
            uow, delivery, people, attempts, reason, permanent=True, cause=cause
        )
        metrics.ATTEMPTS.labels(delivery.channel, "failed").observe(attempts)
        if delivery.kind is DeliveryKind.ASK:
            # Someone cannot be asked: the introduction cannot happen.
            await uow.set_intro_state(proposal.id, IntroState.FAILED)
            await uow.cancel_pending(proposal.id)
        else:
            await self._maybe_finish(uow, proposal)
        log.warning("delivery %s failed: %s", delivery.id, reason)

    async def _maybe_finish(self, uow: NotifierUnitOfWork, proposal: ProposalRecord) -> None:
        if isinstance(proposal, IntroRecord):
            await uow.finish_if_delivered({proposal.id})

    async def _failed_events(
        self,
        uow: NotifierUnitOfWork,
        delivery: DeliveryRecord,
        people: list[Participant],
        attempts: int,
        reason: str,
        permanent: bool,
        cause: JobCause,
    ) -> None:
        await uow.enqueue(
            [
                DeliveryFailed(
                    source="notifier",
                    correlation_id=cause.correlation_id,
                    causation_id=cause.causation_id,
                    data=DeliveryFailureData(
                        **_delivery_fields(delivery, person, attempts),
                        reason=reason[:500],
                        permanent=permanent,
                    ),
                )
                for person in people
            ]
        )
        if permanent:
            metrics.DELIVERIES.labels(delivery.channel, delivery.kind.value, "failed").inc()

    async def _reschedule(
        self, uow: NotifierUnitOfWork, delivery: DeliveryRecord, wait: float, cause: JobCause
    ) -> None:
        generation = delivery.generation + 1
        await uow.save_delivery(
            replace(
                delivery,
                status="pending",
                generation=generation,
                not_before=self._clock.now() + _seconds(wait),
            )
        )
        await run_later(uow, delivery.id, generation, wait, cause)
        metrics.DELIVERIES.labels(delivery.channel, delivery.kind.value, "rescheduled").inc()

    async def _close(
        self,
        uow: NotifierUnitOfWork,
        delivery: DeliveryRecord,
        status: str,
        reason: str | None = None,
    ) -> None:
        await uow.save_delivery(
            replace(
                delivery,
                status=status,
                attempts=delivery.attempts + (1 if status == "failed" else 0),
            ),
            error=reason[:500] if reason else None,
        )
        if status in ("cancelled", "suppressed"):
            metrics.DELIVERIES.labels(delivery.channel, delivery.kind.value, status).inc()


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


def _resource_payload(
    proposal: ResourceRecord, delivery: DeliveryRecord, rendered: Rendered, unsubscribe: str
) -> dict[str, object]:
    """The generic webhook's JSON for a resource (docs/notifier.md)."""
    resource = proposal.resource
    person = resource.recipient
    return {
        "version": 1,
        "type": f"roac.{delivery.kind.value}",
        "delivery_id": str(delivery.id),
        "proposal_id": str(proposal.id),
        "recipient": {
            "source": person.source,
            "external_id": person.external_id,
            "name": person.name,
        },
        "subject": rendered.subject,
        "text": rendered.chat[Style.PLAIN],
        "topics": list(resource.topics),
        "links": {"accept": None, "decline": None, "unsubscribe": unsubscribe},
        "resource": {
            "id": str(resource.resource_id),
            "url": resource.url,
            "title": resource.title,
            "reason": resource.reason,
        },
    }


def _first_of(channels: list[ChannelAddress], kind: ChannelType) -> str | None:
    return next((c.address for c in channels if c.type is kind), None)


def _individual_id(delivery: DeliveryRecord, person: Participant) -> UUID:
    return delivery_id(
        delivery.proposal_id, delivery.kind.value, f"{person.source}/{person.external_id}"
    )


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


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
