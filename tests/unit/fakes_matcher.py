"""An in-memory stand-in for the store slices live matching uses (services/matcher/ports.py),
so `LiveMatching` runs end to end in unit tests without PostgreSQL.

Each method keeps the meaning its SQL has in services/matcher/store/ (what it returns, what
it refuses), not its mechanics: no locks are taken (they are recorded, so a test can see that
they were asked for), candidates are every other reachable holder in id order (the real window
starts at a random id), and times are the wall clock's, as the use case's are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from services.matcher.availability import ROLLING_MONTH, ROLLING_WEEK
from services.matcher.scoring import Interest
from services.matcher.store.rows import (
    Availability,
    InterestRow,
    OwnCaps,
    ProposalRow,
    Resolved,
    TopicCounts,
)
from shared.events import (
    ChannelAddress,
    ChannelType,
    Event,
    InterestKind,
    IntroProposed,
    Participant,
)

SOURCE = "t"


@dataclass
class FakeContact:
    id: int
    name: str
    email: str | None
    organization: str | None = None
    timezone: str | None = None
    snoozed_until: datetime | None = None
    opted_out: bool = False
    own_cap_per_week: int | None = None
    own_cap_per_month: int | None = None
    # Everyone this person blocked (a block works both ways: `blocks_of`).
    blocks: set[int] = field(default_factory=set)

    @property
    def deliverable(self) -> bool:
        return self.email is not None

    @property
    def reachable(self) -> bool:
        return self.deliverable and not self.opted_out


@dataclass
class FakeTopic:
    name: str
    people: int = 0
    meetings: int = 0


@dataclass
class StoredProposal:
    row: ProposalRow
    created_at: datetime


@dataclass
class MatcherWorld:
    """What the matcher's tables would hold, shared by every unit of work on it."""

    contacts: dict[int, FakeContact] = field(default_factory=dict)
    identities: dict[tuple[str, str], Resolved] = field(default_factory=dict)
    topic_ids: dict[str, int] = field(default_factory=dict)
    topics: dict[int, FakeTopic] = field(default_factory=dict)
    # (contact, topic, kind) -> (weight, declared at)
    interests: dict[tuple[int, int, InterestKind], tuple[float, datetime]] = field(
        default_factory=dict
    )
    # (identity, topic name, kind) -> withdrawn at
    withdrawals: dict[tuple[int, str, InterestKind], datetime] = field(default_factory=dict)
    proposals: list[StoredProposal] = field(default_factory=list)
    # group key -> (last proposed at, declined)
    groups: dict[str, tuple[datetime, bool]] = field(default_factory=dict)
    outbox: list[Event] = field(default_factory=list)
    locked_topics: list[set[int]] = field(default_factory=list)
    locked_contacts: list[set[int]] = field(default_factory=list)
    # Introductions another matcher committed meanwhile: seen only under the row locks.
    committed_elsewhere: dict[int, int] = field(default_factory=dict)

    # Arranging the world (what earlier events left behind)

    def person(self, i: int, *, email: bool = True, **profile: object) -> FakeContact:
        """Contact `i`, known as identity ("t", "p{i}")."""
        contact = FakeContact(
            id=i, name=f"Person {i}", email=f"p{i}@example.org" if email else None
        )
        for name, value in profile.items():
            setattr(contact, name, value)
        self.contacts[i] = contact
        self.identities[(SOURCE, f"p{i}")] = Resolved(i, 1000 + i)
        return contact

    def holds(
        self, i: int, topic: str, kind: InterestKind = InterestKind.LIKES, weight: float = 1.0
    ) -> None:
        """Person `i` declared `topic` before (and counts as one of its holders)."""
        topic_id = self.topic(topic)
        if not any(k[0] == i and k[1] == topic_id for k in self.interests):
            self.topics[topic_id].people += 1
        self.interests[(i, topic_id, kind)] = (weight, datetime.now(UTC) - timedelta(days=1))

    def proposed(
        self, *members: int, days_ago: float = 1, declined: bool = False
    ) -> StoredProposal:
        """These people were introduced `days_ago` (and declined it, if so)."""
        at = datetime.now(UTC) - timedelta(days=days_ago)
        key = ":".join(map(str, sorted(members)))
        row = ProposalRow(
            id=UUID(int=len(self.proposals) + 1),
            group_key=key,
            contact_ids=tuple(sorted(members)),
            score=1.0,
            reason="earlier",
            topics=[],
            correlation_id="earlier",
        )
        stored = StoredProposal(row, at)
        self.proposals.append(stored)
        self.groups[key] = (at, declined)
        return stored

    # Reading the outcome

    def intros(self) -> list[IntroProposed]:
        """Each `intro.proposed.v1` queued in the outbox, in order."""
        return [e for e in self.outbox if isinstance(e, IntroProposed)]

    def introduced(self) -> list[tuple[str, ...]]:
        """The external ids of each `intro.proposed.v1` queued, in order."""
        return [tuple(p.external_id for p in event.data.participants) for event in self.intros()]

    def topic(self, name: str) -> int:
        if name not in self.topic_ids:
            self.topic_ids[name] = len(self.topic_ids) + 1
            self.topics[self.topic_ids[name]] = FakeTopic(name)
        return self.topic_ids[name]

    def recent(self, contact_id: int, window: timedelta = ROLLING_WEEK) -> int:
        """Their introductions within `window` (the rolling week unless said otherwise)."""
        since = datetime.now(UTC) - window
        return sum(
            1 for p in self.proposals if contact_id in p.row.contact_ids and p.created_at > since
        )

    def month(self, contact_id: int) -> int:
        """Their introductions within the rolling month, counted (as the SQL's MONTH_INTROS)
        only when they chose a monthly cap of their own."""
        if self.contacts[contact_id].own_cap_per_month is None:
            return 0
        return self.recent(contact_id, ROLLING_MONTH)


class FakeContacts:
    def __init__(self, world: MatcherWorld) -> None:
        self._w = world

    async def population(self) -> int:
        return len(self._w.contacts)

    async def reachable(self, contact_ids: Iterable[int]) -> set[int]:
        return {
            i for i in set(contact_ids) if i in self._w.contacts and self._w.contacts[i].reachable
        }

    async def participants(self, contact_ids: Iterable[int]) -> dict[int, Participant]:
        found = {}
        for i in set(contact_ids):
            c = self._w.contacts.get(i)
            if c is None:
                continue
            channels = [ChannelAddress(type=ChannelType.EMAIL, address=c.email)] if c.email else []
            found[i] = Participant(
                source=SOURCE,
                external_id=f"p{i}",
                name=c.name,
                organization=c.organization,
                timezone=c.timezone,
                channels=channels,
            )
        return found

    async def constraint_profiles(
        self, contact_ids: Iterable[int]
    ) -> dict[int, tuple[str | None, str | None, datetime | None, bool]]:
        return {
            i: (c.organization, c.timezone, c.snoozed_until, c.opted_out)
            for i in set(contact_ids)
            if (c := self._w.contacts.get(i)) is not None
        }

    async def recent_intro_counts(self, contact_ids: Iterable[int]) -> dict[int, int]:
        counts = {i: self._w.recent(i) for i in set(contact_ids)}
        return {i: n for i, n in counts.items() if n}

    async def own_caps(self, contact_ids: Iterable[int]) -> dict[int, OwnCaps]:
        return {
            i: OwnCaps(c.own_cap_per_week, c.own_cap_per_month, self._w.month(i))
            for i in set(contact_ids)
            if (c := self._w.contacts.get(i)) is not None
            and (c.own_cap_per_week is not None or c.own_cap_per_month is not None)
        }

    async def blocks_of(self, contact_ids: Iterable[int]) -> dict[int, set[int]]:
        found: dict[int, set[int]] = {}
        for c in self._w.contacts.values():
            for blocked in c.blocks:
                found.setdefault(c.id, set()).add(blocked)
                found.setdefault(blocked, set()).add(c.id)
        ids = set(contact_ids)
        return {i: others for i, others in found.items() if i in ids}

    async def lock_availability(self, contact_ids: Iterable[int]) -> dict[int, Availability]:
        ids = set(contact_ids)
        self._w.locked_contacts.append(ids)
        elsewhere = self._w.committed_elsewhere
        return {
            i: Availability(
                self._w.recent(i) + elsewhere.get(i, 0),
                c.opted_out,
                c.deliverable,
                c.snoozed_until,
                c.own_cap_per_week,
                c.own_cap_per_month,
                self._w.month(i) + (elsewhere.get(i, 0) if c.own_cap_per_month is not None else 0),
            )
            for i in ids
            if (c := self._w.contacts.get(i)) is not None
        }


class FakeTopics:
    def __init__(self, world: MatcherWorld) -> None:
        self._w = world

    async def upsert_topics(self, names: Iterable[str]) -> dict[str, int]:
        return {name: self._w.topic(name) for name in set(names)}

    async def lock_topics(self, topic_ids: Iterable[int]) -> None:
        self._w.locked_topics.append(set(topic_ids))

    async def withdrawn_declarations(
        self, declarations: Sequence[tuple[int, str, InterestKind, datetime]]
    ) -> set[tuple[int, str, InterestKind]]:
        return {
            (identity, topic, kind)
            for identity, topic, kind, at in declarations
            if (withdrawn := self._w.withdrawals.get((identity, topic, kind))) is not None
            and withdrawn >= at
        }

    async def known_contact_topics(self, pairs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
        held = {(k[0], k[1]) for k in self._w.interests}
        return {p for p in set(pairs) if p in held}

    async def upsert_interests(
        self, rows: Sequence[InterestRow]
    ) -> list[tuple[int, int, InterestKind]]:
        added = []
        for r in rows:
            key = (r.contact_id, r.topic_id, r.kind)
            known = self._w.interests.get(key)
            if known is None:
                added.append(key)
            if known is None or known[1] <= r.declared_at:
                self._w.interests[key] = (r.weight, r.declared_at)
        return added

    async def add_topic_people(self, increments: dict[int, int]) -> None:
        for topic_id, n in increments.items():
            self._w.topics[topic_id].people += n

    async def topics_of(self, contact_ids: Iterable[int]) -> dict[int, set[int]]:
        ids = set(contact_ids)
        found: dict[int, set[int]] = {}
        for contact_id, topic_id, _kind in self._w.interests:
            if contact_id in ids:
                found.setdefault(contact_id, set()).add(topic_id)
        return found

    async def counts(self, topic_ids: Iterable[int]) -> dict[int, TopicCounts]:
        return {
            t: TopicCounts(topic.name, topic.people, topic.meetings)
            for t in set(topic_ids)
            if (topic := self._w.topics.get(t)) is not None
        }

    async def rare_topic_holders(
        self, topic_ids: Iterable[int], max_people: int
    ) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        for t in sorted(set(topic_ids)):
            if self._w.topics[t].people > max_people:
                continue
            for contact_id, topic_id, kind in sorted(self._w.interests):
                if topic_id == t and kind is InterestKind.LIKES and self._reachable(contact_id):
                    found.setdefault(t, []).append(contact_id)
        return found

    async def candidates(
        self, seeds: Iterable[tuple[int, int]], per_topic: int
    ) -> dict[int, set[int]]:
        found: dict[int, set[int]] = {}
        for person, topic in sorted(set(seeds)):
            holders = sorted(
                {
                    c
                    for c, t, _kind in self._w.interests
                    if t == topic and c != person and self._reachable(c)
                }
            )
            if holders:
                found.setdefault(person, set()).update(holders[:per_topic])
        return found

    async def interests_of(
        self, contact_ids: Iterable[int], topic_ids: Iterable[int] | None = None
    ) -> dict[int, list[Interest]]:
        ids = set(contact_ids)
        topics = None if topic_ids is None else set(topic_ids)
        found: dict[int, list[Interest]] = {}
        for (c, t, kind), (weight, at) in sorted(self._w.interests.items()):
            if c in ids and (topics is None or t in topics):
                found.setdefault(c, []).append(Interest(t, kind, weight, at))
        return found

    def _reachable(self, contact_id: int) -> bool:
        c = self._w.contacts.get(contact_id)
        return c is not None and c.reachable


class FakeProposals:
    def __init__(self, world: MatcherWorld) -> None:
        self._w = world

    async def partners_met(
        self, contact_ids: Iterable[int], cooldown_days: int | None = None
    ) -> dict[int, set[int]]:
        since = None if cooldown_days is None else datetime.now(UTC) - timedelta(cooldown_days)
        found: dict[int, set[int]] = {}
        for person in set(contact_ids):
            for p in self._w.proposals:
                if person not in p.row.contact_ids:
                    continue
                declined = self._w.groups[p.row.group_key][1]
                if since is None or p.created_at > since or declined:
                    others = set(p.row.contact_ids) - {person}
                    found.setdefault(person, set()).update(others)
        return found

    async def insert_proposals(
        self, proposals: Sequence[ProposalRow], cooldown_days: int | None = None
    ) -> set[UUID]:
        now = datetime.now(UTC)
        inserted = set()
        for row in sorted(proposals, key=lambda p: p.group_key):
            known = self._w.groups.get(row.group_key)
            if known is not None:
                last, declined = known
                if declined or cooldown_days is None or last >= now - timedelta(cooldown_days):
                    continue
            self._w.groups[row.group_key] = (now, False)
            self._w.proposals.append(StoredProposal(row, now))
            inserted.add(row.id)
        return inserted


class FakeIdentities:
    def __init__(self, world: MatcherWorld) -> None:
        self._w = world

    async def resolve(self, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Resolved]:
        """Known identities, and a bare contact (no address: not reachable) for new ones."""
        found = {}
        for ref in sorted(set(refs)):
            if ref not in self._w.identities:
                new_id = max(self._w.contacts, default=0) + 1
                self._w.contacts[new_id] = FakeContact(id=new_id, name="", email=None)
                self._w.identities[ref] = Resolved(new_id, 1000 + new_id)
            found[ref] = self._w.identities[ref]
        return found


class FakeLiveWork:
    """One unit of work on the world (`ports.LiveMatchingWork`)."""

    def __init__(self, world: MatcherWorld) -> None:
        self.world = world
        self._contacts = FakeContacts(world)
        self._topics = FakeTopics(world)
        self._proposals = FakeProposals(world)
        self._identities = FakeIdentities(world)

    @property
    def contacts(self) -> FakeContacts:
        return self._contacts

    @property
    def topics(self) -> FakeTopics:
        return self._topics

    @property
    def proposals(self) -> FakeProposals:
        return self._proposals

    @property
    def identities(self) -> FakeIdentities:
        return self._identities

    async def enqueue(self, events: Sequence[Event]) -> None:
        self.world.outbox.extend(events)
