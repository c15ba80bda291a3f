"""Every SQL statement the matcher runs, behind a unit of work (one transaction).

Writes are set-based (`unnest` over arrays), one statement per kind of row per batch, and rows
are written in a fixed order so concurrent transactions cannot deadlock on them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.matcher.scoring import Interest, TopicStats
from shared import inbox, outbox
from shared.events import ChannelAddress, ChannelType, ContactRef, Event, InterestKind, Participant

CONSUMER = "matcher"
Ref = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ProfileRow:
    contact_id: int
    name: str
    organization: str | None
    timezone: str | None
    channels: list[ChannelAddress]
    profile_at: datetime


@dataclass(frozen=True, slots=True)
class InterestRow:
    contact_id: int
    topic_id: int
    kind: InterestKind
    weight: float
    declared_at: datetime


@dataclass(frozen=True, slots=True)
class ProposalRow:
    id: UUID
    group_key: str
    contact_ids: tuple[int, ...]
    score: float
    reason: str
    topics: list[dict[str, Any]]
    correlation_id: str


class MatcherUnitOfWork:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def claim_new(self, message_ids: Iterable[UUID]) -> set[UUID]:
        return await inbox.claim_new(self._conn, CONSUMER, message_ids)

    async def enqueue(self, events: Sequence[Event]) -> None:
        await outbox.enqueue(self._conn, CONSUMER, events)

    async def resolve_identities(self, refs: Iterable[Ref]) -> dict[Ref, int]:
        """Map each (source, external_id) to its contact, creating a bare contact for new ones."""
        ordered = sorted(set(refs))
        found = await self._identities(ordered)
        missing = [ref for ref in ordered if ref not in found]
        if not missing:
            return found
        # Only unknown identities draw contact ids, so ids stay dense (the candidate window's
        # random pivot relies on that). A concurrent transaction creating the same identity
        # makes this insert wait, then skip it; the read below picks up its contact.
        created = await self._conn.fetchval(
            """
            WITH new_identity AS (
                INSERT INTO matcher.identities (source, external_id, contact_id)
                SELECT s, e, nextval('matcher.contacts_id_seq')
                FROM unnest($1::text[], $2::text[]) AS t(s, e)
                ORDER BY s, e
                ON CONFLICT DO NOTHING
                RETURNING contact_id
            ), new_contact AS (
                INSERT INTO matcher.contacts (id) SELECT contact_id FROM new_identity RETURNING id
            )
            SELECT count(*) FROM new_contact
            """,
            [r[0] for r in missing],
            [r[1] for r in missing],
        )
        if created:
            await self._conn.execute(
                "UPDATE matcher.counters SET value = value + $1 WHERE name = 'contacts'", created
            )
        return found | await self._identities(missing)

    async def _identities(self, refs: Sequence[Ref]) -> dict[Ref, int]:
        rows = await self._conn.fetch(
            """
            SELECT i.source, i.external_id, i.contact_id
            FROM unnest($1::text[], $2::text[]) AS t(s, e)
            CROSS JOIN LATERAL (
                -- LIMIT keeps this a per-row index lookup: flattened into a join, a generic
                -- plan could hash the whole table for a one-row batch.
                SELECT source, external_id, contact_id FROM matcher.identities
                WHERE source = t.s AND external_id = t.e LIMIT 1
            ) AS i
            """,
            [r[0] for r in refs],
            [r[1] for r in refs],
        )
        return {(r["source"], r["external_id"]): r["contact_id"] for r in rows}

    async def update_profiles(self, rows: Sequence[ProfileRow]) -> set[int]:
        """Apply contact details unless a newer version is stored; return contacts that just
        became reachable (they had no channel before and have one now)."""
        ordered = sorted(rows, key=lambda r: r.contact_id)
        ids = [r.contact_id for r in ordered]
        unreachable_before = {
            r["id"]
            for r in await self._conn.fetch(
                "SELECT id FROM matcher.contacts WHERE id = ANY($1::bigint[]) AND NOT deliverable",
                ids,
            )
        }
        updated = await self._conn.fetch(
            """
            UPDATE matcher.contacts AS c
            SET name = u.name, organization = u.organization, timezone = u.timezone,
                channels = u.channels::jsonb, deliverable = u.deliverable,
                profile_at = u.profile_at, updated_at = now()
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[],
                        $7::timestamptz[])
                 AS u(id, name, organization, timezone, channels, deliverable, profile_at)
            WHERE c.id = u.id AND (c.profile_at IS NULL OR c.profile_at <= u.profile_at)
            RETURNING c.id, c.deliverable
            """,
            ids,
            [r.name for r in ordered],
            [r.organization for r in ordered],
            [r.timezone for r in ordered],
            [json.dumps([c.model_dump(mode="json") for c in r.channels]) for r in ordered],
            [bool(r.channels) for r in ordered],
            [r.profile_at for r in ordered],
        )
        return {r["id"] for r in updated if r["deliverable"] and r["id"] in unreachable_before}

    async def upsert_topics(self, names: Iterable[str]) -> dict[str, int]:
        ordered = sorted(set(names))
        await self._conn.execute(
            """
            INSERT INTO matcher.topics (name)
            SELECT n FROM unnest($1::text[]) AS t(n) ORDER BY n
            ON CONFLICT (name) DO NOTHING
            """,
            ordered,
        )
        rows = await self._conn.fetch(
            "SELECT id, name FROM matcher.topics WHERE name = ANY($1::text[])", ordered
        )
        return {r["name"]: r["id"] for r in rows}

    async def lock_topics(self, topic_ids: Iterable[int]) -> None:
        """Serialise matching per topic: a transaction that adds a person to a topic or makes
        one reachable waits for any other doing the same, then sees its committed rows, so two
        people declaring the same topic at once cannot both miss each other."""
        await self._conn.execute(
            "SELECT 1 FROM matcher.topics WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
            sorted(set(topic_ids)),
        )

    async def topic_stats(self, topic_ids: Iterable[int]) -> dict[int, TopicStats]:
        rows = await self._conn.fetch(
            "SELECT id, name, people FROM matcher.topics WHERE id = ANY($1::bigint[])",
            list(set(topic_ids)),
        )
        return {r["id"]: TopicStats(r["name"], r["people"]) for r in rows}

    async def population(self) -> int:
        value: int = await self._conn.fetchval(
            "SELECT value FROM matcher.counters WHERE name = 'contacts'"
        )
        return value

    async def known_contact_topics(self, pairs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
        """Which (contact, topic) pairs already have an interest of any kind."""
        pairs = list(set(pairs))
        rows = await self._conn.fetch(
            """
            SELECT t.c AS contact_id, t.tp AS topic_id
            FROM unnest($1::bigint[], $2::bigint[]) AS t(c, tp)
            CROSS JOIN LATERAL (
                SELECT 1 FROM matcher.interests WHERE contact_id = t.c AND topic_id = t.tp LIMIT 1
            ) AS found
            """,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
        )
        return {(r["contact_id"], r["topic_id"]) for r in rows}

    async def upsert_interests(
        self, rows: Sequence[InterestRow]
    ) -> list[tuple[int, int, InterestKind]]:
        """Insert new interests, refresh known ones (unless stale); return the new ones."""
        ordered = sorted(rows, key=lambda r: (r.contact_id, r.topic_id, r.kind.value))
        result = await self._conn.fetch(
            """
            INSERT INTO matcher.interests AS i (contact_id, topic_id, kind, weight, declared_at)
            SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::real[],
                                 $5::timestamptz[])
            ON CONFLICT (contact_id, topic_id, kind) DO UPDATE
                SET weight = EXCLUDED.weight, declared_at = EXCLUDED.declared_at
                WHERE i.declared_at <= EXCLUDED.declared_at
            RETURNING contact_id, topic_id, kind, (xmax = 0) AS inserted
            """,
            [r.contact_id for r in ordered],
            [r.topic_id for r in ordered],
            [r.kind.value for r in ordered],
            [r.weight for r in ordered],
            [r.declared_at for r in ordered],
        )
        return [
            (r["contact_id"], r["topic_id"], InterestKind(r["kind"]))
            for r in result
            if r["inserted"]
        ]

    async def add_topic_people(self, increments: dict[int, int]) -> None:
        if not increments:
            return
        ordered = sorted(increments.items())
        await self._conn.execute(
            """
            UPDATE matcher.topics AS t SET people = t.people + u.n
            FROM unnest($1::bigint[], $2::int[]) AS u(id, n) WHERE t.id = u.id
            """,
            [k for k, _ in ordered],
            [n for _, n in ordered],
        )

    async def topics_of(self, contact_ids: Iterable[int]) -> dict[int, set[int]]:
        rows = await self._conn.fetch(
            "SELECT contact_id, topic_id FROM matcher.interests "
            "WHERE contact_id = ANY($1::bigint[])",
            list(set(contact_ids)),
        )
        found: dict[int, set[int]] = {}
        for r in rows:
            found.setdefault(r["contact_id"], set()).add(r["topic_id"])
        return found

    async def reachable(self, contact_ids: Iterable[int]) -> set[int]:
        rows = await self._conn.fetch(
            "SELECT id FROM matcher.contacts "
            "WHERE id = ANY($1::bigint[]) AND deliverable AND NOT opted_out",
            list(set(contact_ids)),
        )
        return {r["id"] for r in rows}

    async def candidates(
        self, seeds: Iterable[tuple[int, int]], per_topic: int
    ) -> dict[int, set[int]]:
        """For each (person, topic), up to `per_topic` other reachable people with that topic.

        Read through the topic index as a window starting at a random contact id (wrapping
        around), so the cost is O(per_topic) however popular the topic, and on a popular topic
        every holder is equally likely to be considered, not always the oldest ones."""
        seeds = sorted(set(seeds))
        rows = await self._conn.fetch(
            """
            WITH q AS (
                SELECT s.contact_id, s.topic_id,
                       floor(random() * (SELECT max(id) + 1 FROM matcher.contacts))::bigint
                           AS pivot
                FROM unnest($1::bigint[], $2::bigint[]) AS s(contact_id, topic_id)
            )
            SELECT q.contact_id AS person, q.topic_id, c.contact_id AS candidate, c.wrapped
            FROM q
            CROSS JOIN LATERAL (
                (SELECT i.contact_id, false AS wrapped
                 FROM matcher.interests i JOIN matcher.contacts ct ON ct.id = i.contact_id
                 WHERE i.topic_id = q.topic_id AND i.contact_id >= q.pivot
                   AND i.contact_id <> q.contact_id AND ct.deliverable AND NOT ct.opted_out
                 ORDER BY i.contact_id LIMIT $3)
                UNION ALL
                (SELECT i.contact_id, true AS wrapped
                 FROM matcher.interests i JOIN matcher.contacts ct ON ct.id = i.contact_id
                 WHERE i.topic_id = q.topic_id AND i.contact_id < q.pivot
                   AND i.contact_id <> q.contact_id AND ct.deliverable AND NOT ct.opted_out
                 ORDER BY i.contact_id LIMIT $3)
            ) AS c
            """,
            [s[0] for s in seeds],
            [s[1] for s in seeds],
            per_topic,
        )
        # Each (person, topic) window: from the pivot upwards, then wrapped around from the
        # lowest id; a person holding a topic under two kinds appears twice, counted once.
        windows: dict[tuple[int, int], list[int]] = {}
        for r in sorted(
            rows, key=lambda r: (r["person"], r["topic_id"], r["wrapped"], r["candidate"])
        ):
            window = windows.setdefault((r["person"], r["topic_id"]), [])
            if r["candidate"] not in window and len(window) < per_topic:
                window.append(r["candidate"])
        found: dict[int, set[int]] = {}
        for (person, _topic), window in windows.items():
            found.setdefault(person, set()).update(window)
        return found

    async def interests_of(
        self, contact_ids: Iterable[int], topic_ids: Iterable[int] | None = None
    ) -> dict[int, list[Interest]]:
        ids = list(set(contact_ids))
        if topic_ids is None:
            rows = await self._conn.fetch(
                "SELECT contact_id, topic_id, kind, weight FROM matcher.interests "
                "WHERE contact_id = ANY($1::bigint[])",
                ids,
            )
        else:
            rows = await self._conn.fetch(
                "SELECT contact_id, topic_id, kind, weight FROM matcher.interests "
                "WHERE contact_id = ANY($1::bigint[]) AND topic_id = ANY($2::bigint[])",
                ids,
                list(set(topic_ids)),
            )
        found: dict[int, list[Interest]] = {}
        for r in rows:
            found.setdefault(r["contact_id"], []).append(
                Interest(r["topic_id"], InterestKind(r["kind"]), float(r["weight"]))
            )
        return found

    async def partners_met(self, contact_ids: Iterable[int]) -> dict[int, set[int]]:
        """Everyone each person was already proposed to (for "never the same pair twice")."""
        rows = await self._conn.fetch(
            """
            SELECT p.person, theirs.contact_id AS partner
            FROM unnest($1::bigint[]) AS p(person)
            CROSS JOIN LATERAL (
                SELECT proposal_id FROM matcher.proposal_participants
                WHERE contact_id = p.person OFFSET 0  -- an index lookup per person, never a hash
            ) AS mine
            CROSS JOIN LATERAL (
                SELECT contact_id FROM matcher.proposal_participants
                WHERE proposal_id = mine.proposal_id AND contact_id <> p.person LIMIT 6
            ) AS theirs
            """,
            list(set(contact_ids)),
        )
        found: dict[int, set[int]] = {}
        for r in rows:
            found.setdefault(r["person"], set()).add(r["partner"])
        return found

    async def participants(self, contact_ids: Iterable[int]) -> dict[int, Participant]:
        """Delivery details of each contact, presented under its oldest identity."""
        rows = await self._conn.fetch(
            """
            SELECT c.id, c.name, c.organization, c.timezone, c.channels, i.source, i.external_id
            FROM matcher.contacts c
            JOIN LATERAL (
                SELECT source, external_id FROM matcher.identities
                WHERE contact_id = c.id ORDER BY created_at, source, external_id LIMIT 1
            ) AS i ON true
            WHERE c.id = ANY($1::bigint[])
            """,
            list(set(contact_ids)),
        )
        # Rows this store wrote from validated events: constructed, not validated again (email
        # validation alone cost a third of a batch's time).
        return {
            r["id"]: Participant.model_construct(
                source=r["source"],
                external_id=r["external_id"],
                name=r["name"],
                organization=r["organization"],
                timezone=r["timezone"],
                channels=[
                    ChannelAddress.model_construct(
                        type=ChannelType(c["type"]), address=c["address"]
                    )
                    for c in r["channels"]
                ],
            )
            for r in rows
        }

    async def insert_proposals(self, proposals: Sequence[ProposalRow]) -> set[UUID]:
        """Insert proposals whose group was never proposed; return the ids actually inserted."""
        ordered = sorted(proposals, key=lambda p: p.group_key)
        inserted = await self._conn.fetch(
            """
            INSERT INTO matcher.proposals (id, group_key, score, reason, topics, correlation_id)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::real[], $4::text[],
                                 $5::text[]::jsonb[],
                                 $6::text[])
            ON CONFLICT (group_key) DO NOTHING
            RETURNING id
            """,
            [p.id for p in ordered],
            [p.group_key for p in ordered],
            [p.score for p in ordered],
            [p.reason for p in ordered],
            [json.dumps(p.topics) for p in ordered],
            [p.correlation_id for p in ordered],
        )
        ids = {r["id"] for r in inserted}
        members = [(p.id, c) for p in ordered if p.id in ids for c in p.contact_ids]
        await self._conn.execute(
            """
            INSERT INTO matcher.proposal_participants (proposal_id, contact_id)
            SELECT * FROM unnest($1::uuid[], $2::bigint[])
            """,
            [m[0] for m in members],
            [m[1] for m in members],
        )
        return ids

    async def record_deliveries(self, outcomes: Sequence[tuple[UUID, ContactRef, str]]) -> None:
        """Mark participants delivered or failed, from the notifier's delivery events."""
        await self._conn.execute(
            """
            UPDATE matcher.proposal_participants AS pp SET delivery_status = u.status
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
                 AS u(proposal_id, source, external_id, status)
            JOIN matcher.identities i ON i.source = u.source AND i.external_id = u.external_id
            WHERE pp.proposal_id = u.proposal_id AND pp.contact_id = i.contact_id
              AND pp.delivery_status <> 'delivered'
            """,
            [o[0] for o in outcomes],
            [o[1].source for o in outcomes],
            [o[1].external_id for o in outcomes],
            [o[2] for o in outcomes],
        )

    async def opt_out(self, refs: Sequence[ContactRef]) -> None:
        await self._conn.execute(
            """
            UPDATE matcher.contacts AS c SET opted_out = true, updated_at = now()
            FROM unnest($1::text[], $2::text[]) AS t(s, e)
            JOIN matcher.identities i ON i.source = t.s AND i.external_id = t.e
            WHERE c.id = i.contact_id AND NOT c.opted_out
            """,
            [r.source for r in refs],
            [r.external_id for r in refs],
        )


class MatcherStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[MatcherUnitOfWork]:
        """One transaction: committed when the block exits normally, rolled back otherwise."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield MatcherUnitOfWork(conn)
