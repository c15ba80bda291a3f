"""The slices of the matcher's store that live matching uses, as Protocols: what the use case
(`service.LiveMatching`) needs of a unit of work, and nothing else.

The PostgreSQL records (`store/contacts.py`, `store/topics.py`, `store/proposals.py`,
`store/identities.py`) satisfy them structurally, without naming them; mypy checks that where
`MatcherService` hands its `MatcherUnitOfWork` to the use case. The unit tests hand it an
in-memory fake instead (`tests/unit/fakes_matcher.py`), so live matching is tested end to end
without a database. The decisions themselves are pure (`live_planning.py`, `group_intros.py`,
`availability.py`); these are only the reads and writes around them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from services.matcher.scoring import Interest
from services.matcher.store.rows import (
    Availability,
    InterestRow,
    OwnCaps,
    ProposalRow,
    Resolved,
    TopicCounts,
)
from shared.events import Event, InterestKind, Participant

Ref = tuple[str, str]


class LiveContacts(Protocol):
    """Contacts as live matching reads them (`uow.contacts`)."""

    async def population(self) -> int: ...

    async def reachable(self, contact_ids: Iterable[int]) -> set[int]: ...

    async def participants(self, contact_ids: Iterable[int]) -> dict[int, Participant]: ...

    async def constraint_profiles(
        self, contact_ids: Iterable[int]
    ) -> dict[int, tuple[str | None, str | None, datetime | None, bool]]:
        """(organisation, time zone, snoozed until, opted out) of each contact."""
        ...

    async def recent_intro_counts(self, contact_ids: Iterable[int]) -> dict[int, int]: ...

    async def own_caps(self, contact_ids: Iterable[int]) -> dict[int, OwnCaps]:
        """The own caps of those who chose any (preferences page), and their month's count."""
        ...

    async def blocks_of(self, contact_ids: Iterable[int]) -> dict[int, set[int]]: ...

    async def lock_availability(self, contact_ids: Iterable[int]) -> dict[int, Availability]:
        """Lock the contacts' rows and read, under the lock, what the weekly cap decides on."""
        ...


class LiveTopics(Protocol):
    """Topics and interests (`uow.topics`): storing what was declared, and the candidates."""

    async def upsert_topics(self, names: Iterable[str]) -> dict[str, int]: ...

    async def lock_topics(self, topic_ids: Iterable[int]) -> None: ...

    async def withdrawn_declarations(
        self, declarations: Sequence[tuple[int, str, InterestKind, datetime]]
    ) -> set[tuple[int, str, InterestKind]]: ...

    async def known_contact_topics(
        self, pairs: Iterable[tuple[int, int]]
    ) -> set[tuple[int, int]]: ...

    async def upsert_interests(
        self, rows: Sequence[InterestRow]
    ) -> list[tuple[int, int, InterestKind]]:
        """Store the interests; return the (contact, topic, kind) that are new."""
        ...

    async def add_topic_people(self, increments: dict[int, int]) -> None: ...

    async def topics_of(self, contact_ids: Iterable[int]) -> dict[int, set[int]]: ...

    async def counts(self, topic_ids: Iterable[int]) -> dict[int, TopicCounts]: ...

    async def rare_topic_holders(
        self, topic_ids: Iterable[int], max_people: int
    ) -> dict[int, list[int]]: ...

    async def candidates(
        self, seeds: Iterable[tuple[int, int]], per_topic: int
    ) -> dict[int, set[int]]:
        """For each (person, topic), up to `per_topic` other reachable holders of the topic."""
        ...

    async def interests_of(
        self, contact_ids: Iterable[int], topic_ids: Iterable[int] | None = None
    ) -> dict[int, list[Interest]]: ...


class LiveProposals(Protocol):
    """Proposals (`uow.proposals`): who met whom, and the guarded insert."""

    async def partners_met(
        self, contact_ids: Iterable[int], cooldown_days: int | None = None
    ) -> dict[int, set[int]]: ...

    async def insert_proposals(
        self, proposals: Sequence[ProposalRow], cooldown_days: int | None = None
    ) -> set[UUID]:
        """Insert the proposals whose group may be proposed; return the ids inserted."""
        ...


class LiveIdentities(Protocol):
    """Identities (`uow.identities`): whose contact a declared interest belongs to."""

    async def resolve(self, refs: Iterable[Ref]) -> dict[Ref, Resolved]: ...


class LiveMatchingWork(Protocol):
    """One transaction as live matching sees it: the four slices and the outbox."""

    @property
    def contacts(self) -> LiveContacts: ...

    @property
    def topics(self) -> LiveTopics: ...

    @property
    def proposals(self) -> LiveProposals: ...

    @property
    def identities(self) -> LiveIdentities: ...

    async def enqueue(self, events: Sequence[Event]) -> None:
        """Into the outbox, in the same transaction."""
        ...
