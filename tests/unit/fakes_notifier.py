"""In-memory stand-ins for what the delivery worker uses (services/notifier/ports.py), and a
channel that answers from a script, so `DeliveryWorker` runs end to end in unit tests without
PostgreSQL, RabbitMQ or a provider.

Each store method keeps the meaning its SQL has in services/notifier/store/ (which rows it
touches, what it returns, the claim a result must still hold), not its mechanics. A unit of
work is a transaction: when its block raises, the world is put back as it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from uuid import UUID

from services.notifier.channels.base import Outgoing, Sent
from services.notifier.delivery_lifecycle import UNSENT, Status
from services.notifier.optin import IntroState
from services.notifier.planning import PlannedDelivery
from services.notifier.store.rows import DeliveryRecord, IntroRecord, ProposalRecord
from shared.events import DeliveryKind, DeliveryRequested, Event
from shared.topology import DELIVERY_QUEUE


@dataclass(frozen=True)
class Queued:
    """One outbox row: an event or a job, and where it goes (None: the events exchange)."""

    event: Event
    exchange: str | None = None
    routing_key: str | None = None
    headers: dict[str, str] | None = None

    @property
    def queue(self) -> str:
        """'now' (the delivery queue), a delay queue's name, the parking queue's, or 'event'."""
        if not isinstance(self.event, DeliveryRequested):
            return "event"
        return "now" if self.exchange is None else str(self.routing_key)


@dataclass
class DeliveryWorld:
    """What the notifier's tables would hold, shared by every unit of work on it."""

    intros: dict[UUID, IntroRecord] = field(default_factory=dict)
    deliveries: dict[UUID, DeliveryRecord] = field(default_factory=dict)
    # (source, external id) of everyone who opted out.
    opted_out: set[tuple[str, str]] = field(default_factory=set)
    # (delivery, channel, outcome, detail), in order.
    attempts: list[tuple[UUID, str, str, str | None]] = field(default_factory=list)
    outbox: list[Queued] = field(default_factory=list)
    # Each saved row's last error.
    errors: dict[UUID, str | None] = field(default_factory=dict)
    # Result writes (the transactions committed without waiting for the disk) still to fail.
    failing_result_writes: int = 0

    def take_jobs(self, *queues: str) -> list[DeliveryRequested]:
        """Take the queued jobs bound for these queues out of the outbox, as the relay would."""
        taken = [q for q in self.outbox if q.queue in queues]
        self.outbox = [q for q in self.outbox if q not in taken]
        return [q.event for q in taken if isinstance(q.event, DeliveryRequested)]

    def queued(self, queue: str) -> list[Queued]:
        return [q for q in self.outbox if q.queue == queue]

    def events(self, type_: str) -> list[Event]:
        return [q.event for q in self.outbox if q.event.type == type_]

    def outcomes(self, delivery_id: UUID) -> list[tuple[str, str]]:
        """(channel, outcome) of each attempt of one delivery."""
        return [(a[1], a[2]) for a in self.attempts if a[0] == delivery_id]

    def snapshot(self) -> DeliveryWorld:
        return replace(
            self,
            intros=dict(self.intros),
            deliveries=dict(self.deliveries),
            opted_out=set(self.opted_out),
            attempts=list(self.attempts),
            outbox=list(self.outbox),
            errors=dict(self.errors),
        )


class TransientDatabaseError(OSError):
    """The database going away (one of shared.consumer.TRANSIENT_ERRORS)."""


class FakeDeliveryRows:
    def __init__(self, world: DeliveryWorld) -> None:
        self._w = world

    async def insert(
        self, planned: Sequence[PlannedDelivery], status: str = "pending"
    ) -> list[UUID]:
        new = []
        for p in planned:
            if p.id in self._w.deliveries:
                continue
            self._w.deliveries[p.id] = DeliveryRecord(
                id=p.id,
                proposal_id=p.proposal_id,
                kind=p.kind,
                positions=tuple(p.positions),
                recipient_source=p.recipient_source,
                recipient_external_id=p.recipient_external_id,
                channel=p.channel.value,
                channel_index=p.channel_index,
                status=status,
                attempts=0,
                generation=0,
                not_before=p.not_before,
            )
            new.append(p.id)
        return new

    async def lock_with_proposals(
        self, delivery_ids: Sequence[UUID]
    ) -> dict[UUID, tuple[ProposalRecord, DeliveryRecord, bool]]:
        locked: dict[UUID, tuple[ProposalRecord, DeliveryRecord, bool]] = {}
        for i in sorted(set(delivery_ids)):
            delivery = self._w.deliveries.get(i)
            intro = self._w.intros.get(delivery.proposal_id) if delivery else None
            if delivery is None or intro is None:
                continue
            people = [intro.participants[p] for p in delivery.positions]
            opted_out = any((p.source, p.external_id) in self._w.opted_out for p in people)
            locked[i] = (intro, delivery, opted_out)
        return locked

    async def mark_in_flight(self, claims: Sequence[tuple[UUID, UUID, str]], at: datetime) -> None:
        for delivery_id, token, _key in claims:
            self._update(delivery_id, in_flight_token=token, in_flight_since=at)

    async def mark_sent(self, sent: Sequence[tuple[UUID, int, str, str, UUID]]) -> dict[UUID, str]:
        statuses = {}
        for delivery_id, attempts, channel, _key, token in sent:
            row = self._w.deliveries[delivery_id]
            if row.in_flight_token != token:
                continue
            status = Status.SENT if row.status == Status.PENDING else row.status
            self._update(
                delivery_id,
                status=status,
                attempts=attempts,
                in_flight_token=None,
                in_flight_since=None,
            )
            self._w.attempts.append((delivery_id, channel, "sent", None))
            statuses[delivery_id] = str(status)
        return statuses

    async def release_claim(self, delivery_id: UUID, token: UUID) -> DeliveryRecord | None:
        row = self._w.deliveries[delivery_id]
        if row.in_flight_token != token:
            return None
        return self._update(delivery_id, in_flight_token=None, in_flight_since=None)

    async def settle_in_flight(
        self, delivery_id: UUID, channel: str, detail: str, resent: bool
    ) -> None:
        row = self._w.deliveries[delivery_id]
        self._update(
            delivery_id,
            in_flight_token=None,
            in_flight_since=None,
            attempts=row.attempts + 1,
            resends=row.resends + int(resent),
        )
        await self.record_attempt(delivery_id, channel, "unknown", detail[:500])

    async def orphaned_in_flight(self, before: datetime, limit: int) -> list[tuple[UUID, int]]:
        found = sorted(
            (d for d in self._w.deliveries.values() if d.status == Status.PENDING),
            key=lambda d: d.in_flight_since or before,
        )
        return [
            (d.id, d.generation)
            for d in found
            if d.in_flight_since is not None and d.in_flight_since < before
        ][:limit]

    async def save(self, delivery: DeliveryRecord, error: str | None = None) -> None:
        current = self._w.deliveries[delivery.id]
        self._w.deliveries[delivery.id] = replace(
            delivery,
            in_flight_token=current.in_flight_token,
            in_flight_since=current.in_flight_since,
            resends=current.resends,
        )
        self._w.errors[delivery.id] = error[:500] if error else None

    async def record_attempt(
        self, delivery_id: UUID, channel: str, outcome: str, detail: str | None
    ) -> None:
        self._w.attempts.append((delivery_id, channel, outcome, detail))

    async def cancel_pending(self, intro_id: UUID, positions: Iterable[int] | None = None) -> int:
        wanted = None if positions is None else set(positions)
        cancelled = 0
        for d in list(self._w.deliveries.values()):
            if d.proposal_id != intro_id or d.status != Status.PENDING:
                continue
            if wanted is None or wanted.intersection(d.positions):
                self._update(d.id, status=Status.CANCELLED)
                cancelled += 1
        return cancelled

    def _update(self, delivery_id: UUID, **changes: object) -> DeliveryRecord:
        row = replace(self._w.deliveries[delivery_id], **changes)  # type: ignore[arg-type]
        self._w.deliveries[delivery_id] = row
        return row


class FakeIntroProgress:
    def __init__(self, world: DeliveryWorld) -> None:
        self._w = world
        self.locked: list[set[UUID]] = []

    async def lock_many(self, intro_ids: Iterable[UUID]) -> None:
        self.locked.append(set(intro_ids))

    async def set_state(self, intro_id: UUID, state: IntroState) -> None:
        self._w.intros[intro_id] = replace(self._w.intros[intro_id], state=state)

    async def finish_if_delivered(self, intro_ids: Iterable[UUID], now: datetime) -> None:
        """`introduced` once none of an accepted introduction's introductions is left unsent."""
        for i in set(intro_ids):
            intro = self._w.intros[i]
            unsent = any(
                d.proposal_id == i and d.kind is DeliveryKind.INTRO and d.status in UNSENT
                for d in self._w.deliveries.values()
            )
            if intro.state is IntroState.ACCEPTED and not unsent:
                await self.set_state(i, IntroState.INTRODUCED)


class FakeOutbox:
    def __init__(self, world: DeliveryWorld) -> None:
        self._w = world

    async def enqueue(
        self,
        events: Sequence[Event],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._w.outbox.extend(Queued(e, exchange, routing_key, headers) for e in events)


class FakeDeliveryWork:
    """One unit of work on the world (`ports.DeliveryWork`)."""

    def __init__(self, world: DeliveryWorld) -> None:
        self._w = world
        self._deliveries = FakeDeliveryRows(world)
        self._intros = FakeIntroProgress(world)
        self._outbox = FakeOutbox(world)

    @property
    def deliveries(self) -> FakeDeliveryRows:
        return self._deliveries

    @property
    def intros(self) -> FakeIntroProgress:
        return self._intros

    @property
    def outbox(self) -> FakeOutbox:
        return self._outbox

    async def commit_without_waiting_for_disk(self) -> None:
        # Only the worker's result writes ask for this: where a test makes the database fail.
        if self._w.failing_result_writes > 0:
            self._w.failing_result_writes -= 1
            raise TransientDatabaseError("connection lost")


class FakeDeliveryStorage:
    """`ports.DeliveryStorage` on one world; counts the transactions opened."""

    def __init__(self, world: DeliveryWorld) -> None:
        self.world = world
        self.transactions = 0

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[FakeDeliveryWork]:
        self.transactions += 1
        before = self.world.snapshot()
        try:
            yield FakeDeliveryWork(self.world)
        except BaseException:
            # Rolled back: the world as the transaction found it.
            for name in ("intros", "deliveries", "opted_out", "attempts", "outbox", "errors"):
                setattr(self.world, name, getattr(before, name))
            raise


class ScriptedChannel:
    """A channel whose sends answer from a script (then succeed); every message is kept."""

    def __init__(self, *script: Sent | BaseException, rate_key: str | None = None) -> None:
        self._script = list(script)
        self._rate_key = rate_key
        self.sent: list[Outgoing] = []

    def rate_key(self, out: Outgoing) -> str | None:
        return self._rate_key

    async def send(self, out: Outgoing) -> Sent:
        self.sent.append(out)
        answer = self._script.pop(0) if self._script else Sent(f"provider-{len(self.sent)}")
        if isinstance(answer, BaseException):
            raise answer
        return answer


PARKING = DELIVERY_QUEUE.dead_letter_queue
