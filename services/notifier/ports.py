"""The slices of the notifier's store that the delivery worker uses, as Protocols: what
`deliveries.DeliveryWorker` needs of a unit of work (and `scheduling`'s job helpers of one),
nothing else.

The PostgreSQL stores (`store/deliveries.py`, `store/intros.py`, `store/outbox.py`, and
`store/uow.py`'s `NotifierStore`) satisfy them structurally, without naming them; mypy checks it
where the service builds its worker (`app.py`). The unit tests hand the worker an in-memory fake
instead (`tests/unit/fakes_notifier.py`), so the delivery lifecycle is tested end to end
through the worker without a database or a broker. The decisions themselves are pure
(`delivery_lifecycle.py`, `in_flight.py`); these are only the reads and writes around them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol
from uuid import UUID

from services.notifier.optin import IntroState
from services.notifier.planning import PlannedDelivery
from services.notifier.store.rows import DeliveryRecord, ProposalRecord
from shared.events import Event


class JobOutbox(Protocol):
    """The outbox (`uow.outbox`): events, and jobs for the delivery, delay and parking queues."""

    async def enqueue(
        self,
        events: Sequence[Event],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None: ...


class QueuesJobs(Protocol):
    """A unit of work that can queue delivery jobs (`scheduling.run_now`, `run_later`, `park`)."""

    @property
    def outbox(self) -> JobOutbox: ...


class DeliveryRows(Protocol):
    """Delivery rows (`uow.deliveries`) as the worker reads and changes them."""

    async def insert(
        self, planned: Sequence[PlannedDelivery], status: str = "pending"
    ) -> list[UUID]: ...

    async def lock_with_proposals(
        self, delivery_ids: Sequence[UUID]
    ) -> dict[UUID, tuple[ProposalRecord, DeliveryRecord, bool]]:
        """Each delivery locked, with what it belongs to and whether a recipient opted out."""
        ...

    async def mark_in_flight(
        self, claims: Sequence[tuple[UUID, UUID, str]], at: datetime
    ) -> None: ...

    async def mark_sent(
        self, sent: Sequence[tuple[UUID, int, str, str, UUID]]
    ) -> dict[UUID, str]: ...

    async def release_claim(self, delivery_id: UUID, token: UUID) -> DeliveryRecord | None: ...

    async def settle_in_flight(
        self, delivery_id: UUID, channel: str, detail: str, resent: bool
    ) -> None: ...

    async def orphaned_in_flight(self, before: datetime, limit: int) -> list[tuple[UUID, int]]: ...

    async def save(self, delivery: DeliveryRecord, error: str | None = None) -> None: ...

    async def record_attempt(
        self, delivery_id: UUID, channel: str, outcome: str, detail: str | None
    ) -> None: ...

    async def cancel_pending(
        self, intro_id: UUID, positions: Iterable[int] | None = None
    ) -> int: ...


class IntroProgress(Protocol):
    """Introductions (`uow.intros`) as deliveries move them on."""

    async def lock_many(self, intro_ids: Iterable[UUID]) -> None: ...

    async def set_state(self, intro_id: UUID, state: IntroState) -> None: ...

    async def finish_if_delivered(self, intro_ids: Iterable[UUID], now: datetime) -> None: ...


class DeliveryWork(QueuesJobs, Protocol):
    """One transaction as the delivery worker sees it."""

    @property
    def deliveries(self) -> DeliveryRows: ...

    @property
    def intros(self) -> IntroProgress: ...

    async def commit_without_waiting_for_disk(self) -> None: ...


class DeliveryStorage(Protocol):
    """Where the worker opens its transactions (`store.uow.NotifierStore`)."""

    def unit_of_work(self) -> AbstractAsyncContextManager[DeliveryWork]: ...
