"""One transaction of the notifier's stores: `NotifierStore.unit_of_work()` opens it on a pooled
connection and exposes each aggregate's store on it (`uow.intros`, `uow.deliveries`,
`uow.people`, `uow.resources`, `uow.outbox`, `uow.preferences`); it commits when the block
ends, and rolls back if the block raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from services.notifier.store.checkins import CheckinStore
from services.notifier.store.deliveries import DeliveryStore
from services.notifier.store.intros import IntroStore
from services.notifier.store.outbox import Outbox
from services.notifier.store.people import PeopleStore
from services.notifier.store.preferences import PreferencesStore
from services.notifier.store.resources import ResourceStore
from shared.erasure import ErasureDigests


class NotifierUnitOfWork:
    def __init__(self, conn: asyncpg.Connection, erasures: ErasureDigests | None = None) -> None:
        self._conn = conn
        self.intros = IntroStore(conn)
        self.deliveries = DeliveryStore(conn)
        self.people = PeopleStore(conn, erasures or ErasureDigests(None))
        self.resources = ResourceStore(conn)
        self.outbox = Outbox(conn)
        self.checkins = CheckinStore(conn)
        self.preferences = PreferencesStore(conn)

    async def commit_without_waiting_for_disk(self) -> None:
        """This transaction's commit returns before its WAL reaches the disk (it is as durable
        as any once flushed, within a fraction of a second; only a crash of PostgreSQL's host
        in between loses it). For the delivery results only: their in-flight records are
        committed durably first, so a result lost that way leaves its delivery in flight, to be
        reconciled, never resent blindly; and the group's sends cost one disk flush, not two."""
        await self._conn.execute("SET LOCAL synchronous_commit = off")


class NotifierStore:
    def __init__(self, pool: asyncpg.Pool, *, erasure_key: bytes | None = None) -> None:
        """`erasure_key` (ROAC_ERASURE_KEY) keys the erasure tombstones; the service always
        passes it (shared/erasure.py)."""
        self._pool = pool
        self._erasures = ErasureDigests(erasure_key)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[NotifierUnitOfWork]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield NotifierUnitOfWork(conn, self._erasures)
