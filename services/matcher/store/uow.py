"""The matcher's unit of work: one transaction, and the records of each aggregate on it.

    async with store.unit_of_work() as uow:
        await uow.contacts.update_profiles(...)
        await uow.proposals.insert_proposals(...)
        await uow.enqueue(events)          # the outbox, in the same transaction

Every SQL statement the matcher runs lives in one of the records (`contacts.py`, `topics.py`,
`proposals.py`, `rounds.py`, `resources.py`, `identities.py`, `erasure.py`); row types are in
`rows.py`. Writes are set-based (`unnest` over arrays), one statement per kind of row per batch,
and rows of one kind are locked in a fixed order (match keys by digest, contacts by id). Across
kinds a deadlock is still possible in rare cases (an erasure taking the erased person out of a
block list while that blocker's own contact event is applied): PostgreSQL aborts one, and the
consumer retries it as a transient failure (shared/consumer.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from uuid import UUID

import asyncpg

from services.matcher.store.contacts import ContactRecords
from services.matcher.store.erasure import CONSUMER, ErasureRecords
from services.matcher.store.identities import IdentityRecords
from services.matcher.store.proposals import ProposalRecords
from services.matcher.store.resources import ResourceRecords
from services.matcher.store.rounds import RoundRecords
from services.matcher.store.topics import TopicRecords
from shared import inbox, outbox
from shared.erasure import ErasureDigests
from shared.events import Event


class MatcherUnitOfWork:
    """One transaction; each aggregate's records on it, and the inbox and outbox."""

    def __init__(self, conn: asyncpg.Connection, erasures: ErasureDigests | None = None) -> None:
        self.contacts = ContactRecords(conn)
        self.topics = TopicRecords(conn)
        self.proposals = ProposalRecords(conn)
        self.rounds = RoundRecords(conn)
        self.resources = ResourceRecords(conn)
        self.identities = IdentityRecords(conn)
        self.erasure = ErasureRecords(conn, erasures or ErasureDigests(None), self.identities)
        self._conn = conn

    async def claim_new(self, message_ids: Iterable[UUID]) -> set[UUID]:
        return await inbox.claim_new(self._conn, CONSUMER, message_ids)

    async def enqueue(self, events: Sequence[Event]) -> None:
        await outbox.enqueue(self._conn, CONSUMER, events)

    async def enqueue_encoded(self, rows: Sequence[outbox.EncodedEvent]) -> None:
        await outbox.enqueue_encoded(self._conn, CONSUMER, rows)


class MatcherStore:
    def __init__(self, pool: asyncpg.Pool, *, erasure_key: bytes | None = None) -> None:
        """`erasure_key` (ROAC_ERASURE_KEY) keys the erasure tombstones; the service always
        passes it (shared/erasure.py)."""
        self._pool = pool
        self._erasures = ErasureDigests(erasure_key)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[MatcherUnitOfWork]:
        """One transaction: committed when the block exits normally, rolled back otherwise."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield MatcherUnitOfWork(conn, self._erasures)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[MatcherUnitOfWork]:
        """A read-only, repeatable-read transaction: a round plans on one consistent view."""
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield MatcherUnitOfWork(conn, self._erasures)
