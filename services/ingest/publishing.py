"""Ingest's use case (`Intake`): turn accepted items into events and publish them to RabbitMQ in
one message. The HTTP routes and the AMQP ingress (amqp_ingress.py) both call it.

A request's events travel in one AMQP message (which may also carry other requests' events of
the same moment: shared/coalescing.py), so a request is accepted whole or not at all: either
RabbitMQ confirmed it (202) or nothing was published (503, safe to retry). (A batch sent with
`?partial=true` reaches here without its refused items: services/ingest/batch_triage.py.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID, uuid4

from services.ingest.idempotency import Verdict, event_id, event_ids
from services.ingest.metrics import EVENTS_ACCEPTED
from services.ingest.schemas import Accepted, BatchAccepted, RejectedItem
from shared.events import (
    ContactData,
    ContactErased,
    ContactOptedOut,
    ContactRef,
    ContactUpserted,
    ErasureData,
    Event,
    InterestData,
    InterestDeclared,
    InterestWithdrawalData,
    InterestWithdrawn,
    OptOutData,
)
from shared.text_safety import kept_correlation_id


class Publisher(Protocol):
    async def publish(self, events: Sequence[Event]) -> None: ...


class PublishFailed(Exception):
    """RabbitMQ did not confirm the events: nothing of the request was accepted."""


def correlation_id_from(header: str | None) -> str:
    """Keep the caller's correlation id when the whole of it is a sane token (a trailing
    newline or a space and more is not); otherwise mint one."""
    return kept_correlation_id(header) or str(uuid4())


class IdempotencyKeys(Protocol):
    async def claim(
        self, integration: str, key: str, fingerprint: bytes
    ) -> tuple[Verdict, dict[str, Any] | None]: ...

    async def complete(self, integration: str, key: str, response: dict[str, Any]) -> None: ...

    async def release(self, integration: str, key: str) -> None: ...


class IdempotencyConflict(Exception):
    """The key was used before for a different request."""


class IdempotencyInProgress(Exception):
    """Another request with the key is being handled right now."""


@dataclass(frozen=True)
class Keyed:
    key: str
    fingerprint: bytes


A = TypeVar("A", bound=Accepted)


@dataclass(frozen=True)
class Answer(Generic[A]):
    accepted: A
    replayed: bool = False


class _Batch:
    """What every event of one batch request carries besides its item."""

    def __init__(
        self,
        correlation_id: str,
        integration: str,
        keyed: Keyed | None,
        bulk: bool,
        indexes: Sequence[int] | None,
        count: int,
    ) -> None:
        self.correlation_id = correlation_id
        self.integration = integration
        self.keyed = keyed
        self.bulk = bulk
        self.positions = list(indexes) if indexes is not None else list(range(count))

    def fields(self) -> list[dict[str, Any]]:
        """The envelope fields of each item's event, in order."""
        # One request is one moment: its events share the time they were accepted.
        now = datetime.now(UTC)
        return [
            {
                "message_id": message_id,
                "occurred_at": now,
                "source": "ingest",
                "correlation_id": self.correlation_id,
                "integration": self.integration,
                "bulk": self.bulk,
            }
            for message_id in _event_ids(self.integration, self.keyed, self.positions)
        ]


class Intake:
    def __init__(self, publisher: Publisher, keys: IdempotencyKeys | None = None) -> None:
        self._publisher = publisher
        self._keys = keys

    async def accept_contacts(
        self,
        items: Sequence[ContactData],
        *,
        correlation_id: str,
        integration: str,
        keyed: Keyed | None = None,
        bulk: bool = False,
        indexes: Sequence[int] | None = None,
        rejected: Sequence[RejectedItem] = (),
    ) -> Answer[BatchAccepted]:
        """`indexes`: each item's position in the request's batch (default: 0, 1, ...), which
        its event id derives from; `rejected`: the items left out (`?partial=true`)."""
        batch = _Batch(correlation_id, integration, keyed, bulk, indexes, len(items))
        events: list[Event] = [
            ContactUpserted(data=item, **fields)
            for item, fields in zip(items, batch.fields(), strict=True)
        ]
        return await self._accept_batch(events, batch, rejected)

    async def accept_interests(
        self,
        items: Sequence[InterestData],
        *,
        correlation_id: str,
        integration: str,
        keyed: Keyed | None = None,
        bulk: bool = False,
        indexes: Sequence[int] | None = None,
        rejected: Sequence[RejectedItem] = (),
    ) -> Answer[BatchAccepted]:
        """As accept_contacts, for interests."""
        batch = _Batch(correlation_id, integration, keyed, bulk, indexes, len(items))
        events: list[Event] = [
            InterestDeclared(data=item, **fields)
            for item, fields in zip(items, batch.fields(), strict=True)
        ]
        return await self._accept_batch(events, batch, rejected)

    async def accept_withdrawals(
        self,
        items: Sequence[InterestWithdrawalData],
        *,
        correlation_id: str,
        integration: str,
        keyed: Keyed | None = None,
    ) -> Answer[BatchAccepted]:
        """Withdraw interests: one interest.withdrawn.v1 each (the matcher forgets them; one the
        person does not hold changes nothing)."""
        batch = _Batch(correlation_id, integration, keyed, False, None, len(items))
        events: list[Event] = [
            InterestWithdrawn(data=item, **fields)
            for item, fields in zip(items, batch.fields(), strict=True)
        ]
        return await self._accept_batch(events, batch, ())

    async def _accept_batch(
        self, events: list[Event], batch: _Batch, rejected: Sequence[RejectedItem]
    ) -> Answer[BatchAccepted]:
        return await self._accept(
            events,
            batch.correlation_id,
            batch.integration,
            batch.keyed,
            BatchAccepted,
            {"indexes": batch.positions, "rejected": list(rejected)},
        )

    async def accept_erasure(
        self, ref: ContactRef, *, correlation_id: str, integration: str, keyed: Keyed | None = None
    ) -> Answer[Accepted]:
        """Erase a person everywhere: one contact.erased.v1 for the matcher and the notifier."""
        event = ContactErased(
            message_id=_event_id(integration, keyed, 0),
            source="ingest",
            correlation_id=correlation_id,
            integration=integration,
            data=ErasureData(source=ref.source, external_id=ref.external_id),
        )
        return await self._accept([event], correlation_id, integration, keyed, Accepted, {})

    async def accept_opt_out(
        self, ref: ContactRef, *, correlation_id: str, integration: str, keyed: Keyed | None = None
    ) -> Answer[Accepted]:
        """No more introductions for a person: the contact.opted_out.v1 an unsubscribe sends."""
        event = ContactOptedOut(
            message_id=_event_id(integration, keyed, 0),
            source="ingest",
            correlation_id=correlation_id,
            integration=integration,
            data=OptOutData(source=ref.source, external_id=ref.external_id, reason="request"),
        )
        return await self._accept([event], correlation_id, integration, keyed, Accepted, {})

    async def _accept(
        self,
        events: Sequence[Event],
        correlation_id: str,
        integration: str,
        keyed: Keyed | None,
        answer: type[A],
        details: dict[str, Any],
    ) -> Answer[A]:
        """Publish, then answer with `answer` (the counts, the event ids and `details`); with
        a key, the whole answer is recorded, so a retry gets it back as it was."""
        if keyed is not None and self._keys is not None:
            verdict, response = await self._keys.claim(integration, keyed.key, keyed.fingerprint)
            if verdict is Verdict.REPLAY and response is not None:
                return Answer(answer.model_validate(response), replayed=True)
            if verdict is Verdict.CONFLICT:
                raise IdempotencyConflict
            if verdict is Verdict.IN_PROGRESS:
                raise IdempotencyInProgress
        try:
            await self._publisher.publish(events)
        except Exception as exc:
            if keyed is not None and self._keys is not None:
                await self._keys.release(integration, keyed.key)
            raise PublishFailed(type(exc).__name__) from exc
        EVENTS_ACCEPTED.labels(events[0].type, integration).inc(len(events))
        accepted = answer(
            accepted=len(events),
            event_ids=[e.message_id for e in events],
            correlation_id=correlation_id,
            **details,
        )
        if keyed is not None and self._keys is not None:
            await self._keys.complete(integration, keyed.key, accepted.model_dump(mode="json"))
        return Answer(accepted)


def _event_id(integration: str, keyed: Keyed | None, index: int) -> UUID:
    return event_id(integration, keyed.key, index) if keyed is not None else uuid4()


def _event_ids(integration: str, keyed: Keyed | None, indexes: Sequence[int]) -> list[UUID]:
    if keyed is not None:
        return event_ids(integration, keyed.key, indexes)
    return [uuid4() for _ in indexes]
