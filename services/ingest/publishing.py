"""Ingest's use case (`Intake`): turn accepted items into events and publish them to RabbitMQ in
one message. The HTTP routes and the AMQP ingress (amqp_ingress.py) both call it.

A request's events travel in one AMQP message (which may also carry other requests' events of
the same moment: shared/coalescing.py), so a request is accepted whole or not at all: either
RabbitMQ confirmed it (202) or nothing was published (503, safe to retry). (A batch sent with
`?partial=true` reaches here without its refused items: services/ingest/batch_triage.py.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID, uuid4

from services.ingest.idempotency import Verdict, event_ids
from services.ingest.metrics import EVENTS_ACCEPTED
from services.ingest.schemas import Accepted, BatchAccepted, RejectedItem
from shared.events import (
    ContactData,
    ContactErased,
    ContactOptedOut,
    ContactPreferencesChanged,
    ContactRef,
    ContactUpserted,
    ErasureData,
    Event,
    InterestData,
    InterestDeclared,
    InterestWithdrawalData,
    InterestWithdrawn,
    OptOutData,
    PreferencesData,
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
        self,
        integration: str,
        key: str,
        fingerprint: bytes,
        legacy: Callable[[], bytes] | None = None,
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
    # Makes the same request's fingerprint in the form kept before (services/ingest/
    # idempotency.py), only when a stored row needs it: a second hash of the body otherwise.
    legacy_fingerprint: Callable[[], bytes] | None = None


@dataclass(frozen=True, kw_only=True)
class Origin:
    """Who sent a request and how: what every event of it carries besides its item. The HTTP
    routes and the AMQP ingress each read it from what they receive."""

    correlation_id: str
    integration: str
    keyed: Keyed | None = None
    # From a bulk import (X-Roac-Bulk, the ingress' x-roac-bulk): applied, introducing nobody.
    bulk: bool = False


A = TypeVar("A", bound=Accepted)


@dataclass(frozen=True)
class Answer(Generic[A]):
    accepted: A
    replayed: bool = False


# What one request can hold: items of one kind, each the data of one event.
BatchItems = Sequence[ContactData] | Sequence[InterestData] | Sequence[InterestWithdrawalData]
# The event each kind of item becomes.
_EVENT_OF: dict[type[Any], Callable[..., Event]] = {
    ContactData: ContactUpserted,
    InterestData: InterestDeclared,
    InterestWithdrawalData: InterestWithdrawn,
    ErasureData: ContactErased,
    OptOutData: ContactOptedOut,
    PreferencesData: ContactPreferencesChanged,
}
# What a request on one person holds: one item, one event.
OnePerson = ErasureData | OptOutData | PreferencesData


class Intake:
    def __init__(self, publisher: Publisher, keys: IdempotencyKeys | None = None) -> None:
        self._publisher = publisher
        self._keys = keys

    async def accept_batch(
        self,
        items: BatchItems,
        origin: Origin,
        *,
        indexes: Sequence[int] | None = None,
        rejected: Sequence[RejectedItem] = (),
    ) -> Answer[BatchAccepted]:
        """People (contact.upserted.v1), interests (interest.declared.v1) or withdrawals of
        interests (interest.withdrawn.v1: the matcher forgets them; one the person does not
        hold changes nothing), one event an item. `indexes`: each item's position in the
        request's batch (default: 0, 1, ...), which its event id derives from; `rejected`: the
        items left out (`?partial=true`)."""
        positions = list(indexes) if indexes is not None else list(range(len(items)))
        return await self._accept(
            _events(items, origin, positions),
            origin,
            BatchAccepted,
            {"indexes": positions, "rejected": list(rejected)},
        )

    async def accept_erasure(self, ref: ContactRef, origin: Origin) -> Answer[Accepted]:
        """Erase a person everywhere: one contact.erased.v1 for the matcher and the notifier."""
        erasure = ErasureData(source=ref.source, external_id=ref.external_id)
        return await self._accept_one(erasure, origin)

    async def accept_opt_out(self, ref: ContactRef, origin: Origin) -> Answer[Accepted]:
        """No more introductions for a person: the contact.opted_out.v1 an unsubscribe sends."""
        opt_out = OptOutData(source=ref.source, external_id=ref.external_id, reason="request")
        return await self._accept_one(opt_out, origin)

    async def accept_preferences(
        self, preferences: PreferencesData, origin: Origin
    ) -> Answer[Accepted]:
        """A person's preferences changed on their behalf: the contact.preferences_changed.v1
        their preferences page sends, which the integration's later upserts do not undo."""
        return await self._accept_one(preferences, origin)

    async def _accept_one(self, item: OnePerson, origin: Origin) -> Answer[Accepted]:
        return await self._accept(_events([item], origin, [0]), origin, Accepted, {})

    async def _accept(
        self, events: Sequence[Event], origin: Origin, answer: type[A], details: dict[str, Any]
    ) -> Answer[A]:
        """Publish, then answer with `answer` (the counts, the event ids and `details`); with
        a key, the whole answer is recorded, so a retry gets it back as it was."""
        integration, keyed = origin.integration, origin.keyed
        if keyed is not None and self._keys is not None:
            verdict, response = await self._keys.claim(
                integration, keyed.key, keyed.fingerprint, keyed.legacy_fingerprint
            )
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
            correlation_id=origin.correlation_id,
            **details,
        )
        if keyed is not None and self._keys is not None:
            await self._keys.complete(integration, keyed.key, accepted.model_dump(mode="json"))
        return Answer(accepted)


def _events(
    items: Sequence[ContactData | InterestData | InterestWithdrawalData | OnePerson],
    origin: Origin,
    positions: Sequence[int],
) -> list[Event]:
    """The event of each item (of one kind), with the envelope its request gives them all."""
    if not items:
        return []
    # By the item's class or the schema it refines (schemas.InboundContact is a ContactData).
    event = next(_EVENT_OF[t] for t in type(items[0]).__mro__ if t in _EVENT_OF)
    # One request is one moment: its events share the time they were accepted.
    now = datetime.now(UTC)
    return [
        event(
            data=item,
            message_id=message_id,
            occurred_at=now,
            source="ingest",
            correlation_id=origin.correlation_id,
            integration=origin.integration,
            bulk=origin.bulk,
        )
        for item, message_id in zip(
            items, _event_ids(origin.integration, origin.keyed, positions), strict=True
        )
    ]


def _event_ids(integration: str, keyed: Keyed | None, indexes: Sequence[int]) -> list[UUID]:
    """Derived from the request's key, so a retry publishes the same ids; else fresh ones."""
    if keyed is not None:
        return event_ids(integration, keyed.key, indexes)
    return [uuid4() for _ in indexes]
