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
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from services.matcher.identity_store import IdentityRecords
from services.matcher.resources import HeldTopic
from services.matcher.scoring import Interest, TopicStats, topic_boost
from shared import inbox, outbox
from shared.erasure import ERASED, ErasureDigests, legacy_digest
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
    tags: tuple[str, ...] = ()
    snoozed_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class InterestRow:
    contact_id: int
    topic_id: int
    kind: InterestKind
    weight: float
    declared_at: datetime
    # The identity that declared it (an unmerge gives each side back its own interests).
    identity_id: int | None = None


class Resolved(NamedTuple):
    contact_id: int
    identity_id: int


@dataclass(frozen=True, slots=True)
class ProposalRow:
    id: UUID
    group_key: str
    contact_ids: tuple[int, ...]
    score: float
    reason: str
    topics: list[dict[str, Any]]
    correlation_id: str
    round_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class PoolRow:
    name: str
    selector: dict[str, list[str]]
    group_size: int
    serendipity: float
    rules: dict[str, str]
    every_seconds: int | None
    next_round_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RoundRow:
    id: UUID
    pool: str
    group_size: int
    seed: int
    serendipity: float
    dry_run: bool
    status: str
    worker: UUID | None
    attempts: int
    stats: dict[str, Any] | None
    plan: list[dict[str, Any]] | None
    error: str | None
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A pool member as a round sees it."""

    id: int
    organization: str | None
    timezone: str | None
    snoozed_until: datetime | None
    last_introduced_at: datetime | None


@dataclass(frozen=True, slots=True)
class Availability:
    """A contact's state read under its row lock, just before a proposal is written."""

    recent_intros: int
    opted_out: bool
    deliverable: bool
    snoozed_until: datetime | None


class MatcherUnitOfWork:
    def __init__(self, conn: asyncpg.Connection, erasures: ErasureDigests | None = None) -> None:
        self._conn = conn
        self._erasures = erasures or ErasureDigests(None)
        self.identities = IdentityRecords(conn)

    async def claim_new(self, message_ids: Iterable[UUID]) -> set[UUID]:
        return await inbox.claim_new(self._conn, CONSUMER, message_ids)

    async def enqueue(self, events: Sequence[Event]) -> None:
        await outbox.enqueue(self._conn, CONSUMER, events)

    async def enqueue_encoded(self, rows: Sequence[outbox.EncodedEvent]) -> None:
        await outbox.enqueue_encoded(self._conn, CONSUMER, rows)

    async def resolve_identities(self, refs: Iterable[Ref]) -> dict[Ref, int]:
        """Map each (source, external_id) to its contact, creating a bare contact for new ones."""
        return {ref: found.contact_id for ref, found in (await self.resolve(refs)).items()}

    async def resolve(self, refs: Iterable[Ref]) -> dict[Ref, Resolved]:
        """Each (source, external_id)'s contact and identity, creating a bare contact for new
        ones."""
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

    async def _identities(self, refs: Sequence[Ref]) -> dict[Ref, Resolved]:
        rows = await self._conn.fetch(
            """
            SELECT i.source, i.external_id, i.contact_id, i.id
            FROM unnest($1::text[], $2::text[]) AS t(s, e)
            CROSS JOIN LATERAL (
                -- LIMIT keeps this a per-row index lookup: flattened into a join, a generic
                -- plan could hash the whole table for a one-row batch.
                SELECT source, external_id, contact_id, id FROM matcher.identities
                WHERE source = t.s AND external_id = t.e LIMIT 1
            ) AS i
            """,
            [r[0] for r in refs],
            [r[1] for r in refs],
        )
        return {(r["source"], r["external_id"]): Resolved(r["contact_id"], r["id"]) for r in rows}

    async def update_profiles(self, rows: Sequence[ProfileRow], *, force: bool = False) -> set[int]:
        """Apply contact details unless a newer version is stored (force: even then); return
        contacts that just became reachable (they had no channel before and have one now)."""
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
                profile_at = u.profile_at, updated_at = now(),
                tags = ARRAY(SELECT jsonb_array_elements_text(u.tags::jsonb)),
                snoozed_until = u.snoozed_until
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[],
                        $7::timestamptz[], $8::text[], $9::timestamptz[])
                 AS u(id, name, organization, timezone, channels, deliverable, profile_at, tags,
                      snoozed_until)
            WHERE c.id = u.id
              AND ($10 OR c.profile_at IS NULL OR c.profile_at <= u.profile_at)
            RETURNING c.id, c.deliverable
            """,
            ids,
            [r.name for r in ordered],
            [r.organization for r in ordered],
            [r.timezone for r in ordered],
            [json.dumps([c.model_dump(mode="json") for c in r.channels]) for r in ordered],
            [bool(r.channels) for r in ordered],
            [r.profile_at for r in ordered],
            [json.dumps(list(r.tags)) for r in ordered],
            [r.snoozed_until for r in ordered],
            force,
        )
        return {r["id"] for r in updated if r["deliverable"] and r["id"] in unreachable_before}

    async def replace_blocks(self, blocks: dict[int, set[int]]) -> None:
        """Set each listed contact's block list to exactly the given contacts."""
        owners = sorted(blocks)
        await self._conn.execute(
            "DELETE FROM matcher.blocks WHERE contact_id = ANY($1::bigint[])", owners
        )
        pairs = sorted((owner, blocked) for owner in owners for blocked in blocks[owner])
        await self._conn.execute(
            """
            INSERT INTO matcher.blocks (contact_id, blocked_id)
            SELECT * FROM unnest($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING
            """,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
        )

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
            "SELECT id, name, people, meetings FROM matcher.topics WHERE id = ANY($1::bigint[])",
            list(set(topic_ids)),
        )
        return {
            r["id"]: TopicStats(r["name"], r["people"], topic_boost(r["meetings"])) for r in rows
        }

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
            INSERT INTO matcher.interests AS i
                (contact_id, topic_id, kind, weight, declared_at, via)
            SELECT c, t, k, w, d, CASE WHEN v IS NULL THEN '{}'::bigint[] ELSE ARRAY[v] END
            FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::real[],
                        $5::timestamptz[], $6::bigint[]) AS u(c, t, k, w, d, v)
            ON CONFLICT (contact_id, topic_id, kind) DO UPDATE
                SET weight = CASE WHEN i.declared_at <= EXCLUDED.declared_at
                                  THEN EXCLUDED.weight ELSE i.weight END,
                    declared_at = greatest(i.declared_at, EXCLUDED.declared_at),
                    via = CASE WHEN EXCLUDED.via <@ i.via THEN i.via
                               ELSE i.via || EXCLUDED.via END
                WHERE i.declared_at <= EXCLUDED.declared_at OR NOT EXCLUDED.via <@ i.via
            RETURNING contact_id, topic_id, kind, (xmax = 0) AS inserted
            """,
            [r.contact_id for r in ordered],
            [r.topic_id for r in ordered],
            [r.kind.value for r in ordered],
            [r.weight for r in ordered],
            [r.declared_at for r in ordered],
            [r.identity_id for r in ordered],
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

    async def rare_topic_holders(
        self, topic_ids: Iterable[int], max_people: int
    ) -> dict[int, list[int]]:
        """For each of these topics held by at most `max_people` people, its reachable,
        not opted-out holders who like it."""
        rows = await self._conn.fetch(
            """
            SELECT i.topic_id, i.contact_id
            FROM matcher.topics t
            JOIN matcher.interests i ON i.topic_id = t.id AND i.kind = 'likes'
            JOIN matcher.contacts c ON c.id = i.contact_id
            WHERE t.id = ANY($1::bigint[]) AND t.people <= $2
              AND c.deliverable AND NOT c.opted_out
            """,
            sorted(set(topic_ids)),
            max_people,
        )
        found: dict[int, list[int]] = {}
        for r in rows:
            found.setdefault(r["topic_id"], []).append(r["contact_id"])
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
                -- The window is cut from the index first (an ordered index scan with a LIMIT
                -- on one table), then joined to contacts: with the join inside, the planner
                -- may read and sort every holder of a popular topic (120 ms at 25,000).
                (SELECT w.contact_id, false AS wrapped
                 FROM (SELECT i.contact_id FROM matcher.interests i
                       WHERE i.topic_id = q.topic_id AND i.contact_id >= q.pivot
                         AND i.contact_id <> q.contact_id
                       ORDER BY i.contact_id LIMIT $3 * 2) AS w
                 JOIN matcher.contacts ct ON ct.id = w.contact_id
                 WHERE ct.deliverable AND NOT ct.opted_out
                 ORDER BY w.contact_id LIMIT $3)
                UNION ALL
                (SELECT w.contact_id, true AS wrapped
                 FROM (SELECT i.contact_id FROM matcher.interests i
                       WHERE i.topic_id = q.topic_id AND i.contact_id < q.pivot
                         AND i.contact_id <> q.contact_id
                       ORDER BY i.contact_id LIMIT $3 * 2) AS w
                 JOIN matcher.contacts ct ON ct.id = w.contact_id
                 WHERE ct.deliverable AND NOT ct.opted_out
                 ORDER BY w.contact_id LIMIT $3)
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
        # One primary-key lookup per contact (a person holds a handful of interests). Given the
        # topics as an array, the planner may instead read every holder of a popular topic
        # through the topic index and filter by contact: 115 ms at a million people.
        rows = await self._conn.fetch(
            """
            SELECT i.contact_id, i.topic_id, i.kind, i.weight, i.declared_at
            FROM unnest($1::bigint[]) AS c(id)
            CROSS JOIN LATERAL (
                SELECT contact_id, topic_id, kind, weight, declared_at FROM matcher.interests
                WHERE contact_id = c.id OFFSET 0
            ) AS i
            WHERE $2::bigint[] IS NULL OR i.topic_id = ANY($2::bigint[])
            """,
            ids,
            None if topic_ids is None else list(set(topic_ids)),
        )
        kinds = {k.value: k for k in InterestKind}
        found: dict[int, list[Interest]] = {}
        for r in rows:
            found.setdefault(r["contact_id"], []).append(
                Interest(r["topic_id"], kinds[r["kind"]], float(r["weight"]), r["declared_at"])
            )
        return found

    async def partners_met(
        self, contact_ids: Iterable[int], cooldown_days: int | None = None
    ) -> dict[int, set[int]]:
        """Everyone each person must not be grouped with again: proposed to them within the
        cooldown (ever, without one), or in a group that was declined."""
        rows = await self._conn.fetch(
            """
            SELECT p.person, theirs.contact_id AS partner
            FROM unnest($1::bigint[]) AS p(person)
            CROSS JOIN LATERAL (
                SELECT proposal_id, created_at FROM matcher.proposal_participants
                WHERE contact_id = p.person OFFSET 0  -- an index lookup per person, never a hash
            ) AS mine
            CROSS JOIN LATERAL (
                SELECT contact_id FROM matcher.proposal_participants
                WHERE proposal_id = mine.proposal_id AND contact_id <> p.person LIMIT 6
            ) AS theirs
            WHERE $2::int IS NULL
               OR mine.created_at > now() - make_interval(days => $2::int)
               OR EXISTS (
                   SELECT 1 FROM matcher.proposals pr JOIN matcher.groups g USING (group_key)
                   WHERE pr.id = mine.proposal_id AND g.declined)
            """,
            list(set(contact_ids)),
            cooldown_days,
        )
        found: dict[int, set[int]] = {}
        for r in rows:
            found.setdefault(r["person"], set()).add(r["partner"])
        return found

    async def participant_rows(self, contact_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Delivery details of each contact under its oldest identity, as plain JSON-ready
        dicts (rounds serialise tens of thousands of them directly)."""
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
        return {
            r["id"]: {
                "source": r["source"],
                "external_id": r["external_id"],
                "name": r["name"],
                "organization": r["organization"],
                "timezone": r["timezone"],
                "channels": [{"type": c["type"], "address": c["address"]} for c in r["channels"]],
            }
            for r in rows
        }

    async def participants(self, contact_ids: Iterable[int]) -> dict[int, Participant]:
        """Delivery details of each contact, presented under its oldest identity."""
        # Rows this store wrote from validated events: constructed, not validated again (email
        # validation alone cost a third of a batch's time).
        return {
            contact_id: Participant.model_construct(
                **(
                    row
                    | {
                        "channels": [
                            ChannelAddress.model_construct(
                                type=ChannelType(c["type"]), address=c["address"]
                            )
                            for c in row["channels"]
                        ]
                    }
                )
            )
            for contact_id, row in (await self.participant_rows(contact_ids)).items()
        }

    async def lock_availability(self, contact_ids: Iterable[int]) -> dict[int, Availability]:
        """Lock the contacts (in id order, so writers cannot deadlock) and read, under the lock,
        what decides whether they may get another introduction. Every proposal is written
        after this, in the same transaction: two matchers cannot both see room under the cap."""
        ids = sorted(set(contact_ids))
        # NO KEY UPDATE: exclusive among writers like this one, yet compatible with the
        # KEY SHARE locks this transaction's own foreign keys (interests, participants) took.
        await self._conn.execute(
            "SELECT 1 FROM matcher.contacts WHERE id = ANY($1::bigint[]) ORDER BY id "
            "FOR NO KEY UPDATE",
            ids,
        )
        # A separate statement: under READ COMMITTED it reads a snapshot taken after the locks
        # were granted, so it sees what the previous holder committed.
        rows = await self._conn.fetch(
            """
            SELECT c.id, c.opted_out, c.deliverable, c.snoozed_until,
                   (SELECT count(*) FROM matcher.proposal_participants pp
                    WHERE pp.contact_id = c.id AND pp.created_at > now() - interval '7 days')
                       AS recent
            FROM matcher.contacts c WHERE c.id = ANY($1::bigint[])
            """,
            ids,
        )
        return {
            r["id"]: Availability(r["recent"], r["opted_out"], r["deliverable"], r["snoozed_until"])
            for r in rows
        }

    async def recent_intro_counts(self, contact_ids: Iterable[int]) -> dict[int, int]:
        rows = await self._conn.fetch(
            """
            SELECT t.id, (SELECT count(*) FROM matcher.proposal_participants pp
                          WHERE pp.contact_id = t.id AND pp.created_at > now() - interval '7 days')
                       AS recent
            FROM unnest($1::bigint[]) AS t(id)
            """,
            list(set(contact_ids)),
        )
        return {r["id"]: r["recent"] for r in rows if r["recent"]}

    async def blocks_of(self, contact_ids: Iterable[int]) -> dict[int, set[int]]:
        """For each contact, everyone it blocks or is blocked by."""
        ids = list(set(contact_ids))
        rows = await self._conn.fetch(
            """
            SELECT contact_id AS person, blocked_id AS other FROM matcher.blocks
            WHERE contact_id = ANY($1::bigint[])
            UNION
            SELECT blocked_id, contact_id FROM matcher.blocks WHERE blocked_id = ANY($1::bigint[])
            """,
            ids,
        )
        found: dict[int, set[int]] = {}
        for r in rows:
            found.setdefault(r["person"], set()).add(r["other"])
        return found

    async def constraint_profiles(
        self, contact_ids: Iterable[int]
    ) -> dict[int, tuple[str | None, str | None, datetime | None, bool]]:
        """Organisation, time zone, snooze and opt-out of each contact."""
        rows = await self._conn.fetch(
            "SELECT id, organization, timezone, snoozed_until, opted_out FROM matcher.contacts "
            "WHERE id = ANY($1::bigint[])",
            list(set(contact_ids)),
        )
        return {
            r["id"]: (r["organization"], r["timezone"], r["snoozed_until"], r["opted_out"])
            for r in rows
        }

    async def insert_proposals(
        self, proposals: Sequence[ProposalRow], cooldown_days: int | None = None
    ) -> set[UUID]:
        """Insert proposals whose group may be proposed (never before, or not within the
        cooldown, and never after a decline); return the ids actually inserted. The groups row
        is the guard: of two transactions proposing one group, the second waits and skips."""
        ordered = sorted(proposals, key=lambda p: p.group_key)
        allowed = await self._conn.fetch(
            """
            INSERT INTO matcher.groups AS g (group_key, last_proposed_at)
            SELECT k, now() FROM unnest($1::text[]) AS t(k) ORDER BY k
            ON CONFLICT (group_key) DO UPDATE SET last_proposed_at = EXCLUDED.last_proposed_at
                WHERE NOT g.declined AND $2::int IS NOT NULL
                  AND g.last_proposed_at < now() - make_interval(days => $2::int)
            RETURNING group_key
            """,
            [p.group_key for p in ordered],
            cooldown_days,
        )
        keys = {r["group_key"] for r in allowed}
        ordered = [p for p in ordered if p.group_key in keys]
        if not ordered:
            return set()
        await self._conn.execute(
            """
            INSERT INTO matcher.proposals
                (id, group_key, score, reason, topics, correlation_id, round_id)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::real[], $4::text[],
                                 $5::text[]::jsonb[], $6::text[], $7::uuid[])
            """,
            [p.id for p in ordered],
            [p.group_key for p in ordered],
            [p.score for p in ordered],
            [p.reason for p in ordered],
            [json.dumps(p.topics) for p in ordered],
            [p.correlation_id for p in ordered],
            [p.round_id for p in ordered],
        )
        members = sorted((c, p.id) for p in ordered for c in p.contact_ids)
        await self._conn.execute(
            """
            INSERT INTO matcher.proposal_participants (proposal_id, contact_id)
            SELECT * FROM unnest($1::uuid[], $2::bigint[])
            """,
            [m[1] for m in members],
            [m[0] for m in members],
        )
        return {p.id for p in ordered}

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

    async def record_feedback(
        self, proposal_id: UUID, outcome: str, rating: int | None
    ) -> bool | None:
        """Store one piece of feedback; None when the proposal is unknown, else whether it is
        the proposal's first `met` (its topics count one more meeting only then). The proposal
        row is locked so two participants reporting at once count one meeting."""
        exists = await self._conn.fetchval(
            "SELECT true FROM matcher.proposals WHERE id = $1 FOR NO KEY UPDATE", proposal_id
        )
        if not exists:
            return None
        met_before = await self._conn.fetchval(
            "SELECT count(*) FROM matcher.feedback WHERE proposal_id = $1 AND outcome = 'met'",
            proposal_id,
        )
        await self._conn.execute(
            "INSERT INTO matcher.feedback (proposal_id, outcome, rating) VALUES ($1, $2, $3)",
            proposal_id,
            outcome,
            rating,
        )
        return outcome == "met" and met_before == 0

    async def decline_group(self, proposal_id: UUID) -> None:
        await self._conn.execute(
            """
            UPDATE matcher.groups g SET declined = true FROM matcher.proposals p
            WHERE p.id = $1 AND g.group_key = p.group_key
            """,
            proposal_id,
        )

    async def count_meeting(self, proposal_id: UUID) -> None:
        await self._conn.execute(
            """
            UPDATE matcher.topics t SET meetings = t.meetings + 1
            FROM matcher.proposals p, jsonb_array_elements(p.topics) AS pt
            WHERE p.id = $1 AND t.name = pt->>'topic'
            """,
            proposal_id,
        )

    async def feedback_summary(self, proposal_id: UUID) -> tuple[dict[str, int], float | None]:
        rows = await self._conn.fetch(
            "SELECT outcome, count(*) AS n, avg(rating) AS rating FROM matcher.feedback "
            "WHERE proposal_id = $1 GROUP BY outcome",
            proposal_id,
        )
        ratings = await self._conn.fetchval(
            "SELECT avg(rating) FROM matcher.feedback WHERE proposal_id = $1", proposal_id
        )
        return {r["outcome"]: r["n"] for r in rows}, (
            round(float(ratings), 2) if ratings is not None else None
        )

    async def upsert_resource(self, rid: UUID, url: str, title: str, topics: list[str]) -> None:
        await self._conn.execute(
            """
            INSERT INTO matcher.resources (id, url, title, topics) VALUES ($1, $2, $3, $4)
            ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, topics = EXCLUDED.topics,
                updated_at = now()
            """,
            rid,
            url,
            title,
            topics,
        )

    async def topic_ids(self, names: Sequence[str]) -> dict[str, int]:
        rows = await self._conn.fetch(
            "SELECT id, name FROM matcher.topics WHERE name = ANY($1::text[])", list(names)
        )
        return {r["name"]: r["id"] for r in rows}

    async def interested_in(
        self, resource_id: UUID, topic_ids: list[int], cap_per_week: int
    ) -> list[HeldTopic]:
        """Who likes or seeks these topics, is reachable and available, has room under the
        resource cap, and has not received this resource yet."""
        rows = await self._conn.fetch(
            """
            SELECT i.contact_id, i.topic_id, i.weight, i.declared_at
            FROM matcher.interests i JOIN matcher.contacts c ON c.id = i.contact_id
            WHERE i.topic_id = ANY($1::bigint[]) AND i.kind IN ('likes', 'seeks')
              AND c.deliverable AND NOT c.opted_out
              AND (c.snoozed_until IS NULL OR c.snoozed_until <= now())
              AND NOT EXISTS (SELECT 1 FROM matcher.resource_recipients r
                              WHERE r.resource_id = $2 AND r.contact_id = i.contact_id)
              AND (SELECT count(*) FROM matcher.resource_recipients r
                   WHERE r.contact_id = i.contact_id
                     AND r.created_at > now() - interval '7 days') < $3
            """,
            topic_ids,
            resource_id,
            cap_per_week,
        )
        return [
            HeldTopic(r["contact_id"], r["topic_id"], float(r["weight"]), r["declared_at"])
            for r in rows
        ]

    async def lock_resource_room(self, contact_ids: list[int], cap_per_week: int) -> set[int]:
        """Lock the recipients (id order) and return those still reachable, available and under
        the resource cap, read after the locks were granted."""
        ids = sorted(set(contact_ids))
        await self._conn.execute(
            "SELECT 1 FROM matcher.contacts WHERE id = ANY($1::bigint[]) ORDER BY id "
            "FOR NO KEY UPDATE",
            ids,
        )
        rows = await self._conn.fetch(
            """
            SELECT c.id FROM matcher.contacts c
            WHERE c.id = ANY($1::bigint[]) AND c.deliverable AND NOT c.opted_out
              AND (c.snoozed_until IS NULL OR c.snoozed_until <= now())
              AND (SELECT count(*) FROM matcher.resource_recipients r
                   WHERE r.contact_id = c.id AND r.created_at > now() - interval '7 days') < $2
            """,
            ids,
            cap_per_week,
        )
        return {r["id"] for r in rows}

    async def insert_resource_recipients(
        self, resource_id: UUID, rows: Sequence[tuple[int, UUID, float]]
    ) -> set[UUID]:
        ordered = sorted(rows)
        inserted = await self._conn.fetch(
            """
            INSERT INTO matcher.resource_recipients (resource_id, contact_id, proposal_id, score)
            SELECT $1, c, p, s FROM unnest($2::bigint[], $3::uuid[], $4::real[]) AS t(c, p, s)
            ON CONFLICT (resource_id, contact_id) DO NOTHING
            RETURNING proposal_id
            """,
            resource_id,
            [r[0] for r in ordered],
            [r[1] for r in ordered],
            [r[2] for r in ordered],
        )
        return {r["proposal_id"] for r in inserted}

    async def resource_recipient_count(self, resource_id: UUID) -> int:
        count: int = await self._conn.fetchval(
            "SELECT count(*) FROM matcher.resource_recipients WHERE resource_id = $1", resource_id
        )
        return count

    async def resource(self, resource_id: UUID) -> dict[str, Any] | None:
        row = await self._conn.fetchrow(
            """
            SELECT r.id, r.url, r.title, r.topics, r.created_at,
                   (SELECT count(*) FROM matcher.resource_recipients rr
                    WHERE rr.resource_id = r.id) AS recipients
            FROM matcher.resources r WHERE r.id = $1
            """,
            resource_id,
        )
        return dict(row) if row else None

    async def opt_out(self, refs: Sequence[ContactRef]) -> None:
        """The person opts out whole: their contact and every identity of it (so both sides
        of a later unmerge stay out)."""
        contact_ids = await self._conn.fetch(
            """
            UPDATE matcher.contacts AS c SET opted_out = true, updated_at = now()
            FROM unnest($1::text[], $2::text[]) AS t(s, e)
            JOIN matcher.identities i ON i.source = t.s AND i.external_id = t.e
            WHERE c.id = i.contact_id
            RETURNING c.id
            """,
            [r.source for r in refs],
            [r.external_id for r in refs],
        )
        await self._conn.execute(
            "UPDATE matcher.identities SET opted_out = true "
            "WHERE contact_id = ANY($1::bigint[]) AND NOT opted_out",
            sorted({r["id"] for r in contact_ids}),
        )

    # Erasure

    async def erased_refs(self, refs: Iterable[tuple[Ref, datetime]]) -> set[Ref]:
        """Which identities were erased after the given moment (an event that occurred then is
        from before the erasure: applying it would bring the person back)."""
        pairs = list(refs)
        if not pairs:
            return set()
        # Keyed digests, and the legacy ones of tombstones from before ROAC_ERASURE_KEY.
        digests = self._erasures.lookups(ref for ref, _ in pairs)
        rows = await self._conn.fetch(
            "SELECT digest, erased_at FROM matcher.erasures WHERE digest = ANY($1::bytea[])",
            list(digests),
        )
        erased_at: dict[Ref, datetime] = {}
        for r in rows:
            ref = digests[bytes(r["digest"])]
            erased_at[ref] = max(r["erased_at"], erased_at.get(ref, r["erased_at"]))
        return {ref for ref, at in pairs if ref in erased_at and at <= erased_at[ref]}

    async def erase(self, ref: Ref, erased_at: datetime) -> int | None:
        """Erase one person: a tombstone for each of their identities (a digest, never the id),
        the identities, interests (topic counts follow) and blocks deleted, the contact row
        scrubbed and opted out, their refs in stored proposals and in not yet relayed events
        replaced or dropped. Returns the contact id, None for an identity never seen."""
        contact_id: int | None = await self._conn.fetchval(
            "SELECT contact_id FROM matcher.identities WHERE source = $1 AND external_id = $2",
            *ref,
        )
        refs = {ref}
        if contact_id is not None:
            # The contact row lock: a proposal being written for them waits, then re-checks.
            await self._conn.execute(
                "SELECT 1 FROM matcher.contacts WHERE id = $1 FOR UPDATE", contact_id
            )
            keys = await self.identities.keys_of(contact_id)
            rows = await self._conn.fetch(
                "DELETE FROM matcher.identities WHERE contact_id = $1 "
                "RETURNING source, external_id",
                contact_id,
            )
            refs |= {(r["source"], r["external_id"]) for r in rows}
            await self.identities.forget_unused_keys(keys)
        ordered = sorted(refs)
        if self._erasures.keyed:
            # Legacy (unkeyed) tombstones of theirs give way to keyed ones; the later moment wins.
            legacy = await self._conn.fetch(
                "DELETE FROM matcher.erasures WHERE digest = ANY($1::bytea[]) AND NOT keyed "
                "RETURNING erased_at",
                [legacy_digest(*r) for r in ordered],
            )
            erased_at = max([erased_at, *(r["erased_at"] for r in legacy)])
        await self._conn.execute(
            """
            INSERT INTO matcher.erasures (digest, erased_at, keyed)
            SELECT d, t, $3 FROM unnest($1::bytea[], $2::timestamptz[]) AS u(d, t)
            ON CONFLICT (digest) DO UPDATE
                SET erased_at = greatest(matcher.erasures.erased_at, EXCLUDED.erased_at)
            """,
            [self._erasures.digest(*r) for r in ordered],
            [erased_at] * len(ordered),
            self._erasures.keyed,
        )
        await self._forget_unrelayed(ordered)
        if contact_id is None:
            return None
        await self._conn.execute(
            """
            UPDATE matcher.topics SET people = greatest(people - 1, 0)
            WHERE id IN (SELECT topic_id FROM matcher.interests WHERE contact_id = $1)
            """,
            contact_id,
        )
        await self._conn.execute("DELETE FROM matcher.interests WHERE contact_id = $1", contact_id)
        await self._conn.execute(
            "DELETE FROM matcher.blocks WHERE contact_id = $1 OR blocked_id = $1", contact_id
        )
        await self._conn.execute(
            """
            UPDATE matcher.contacts
            SET name = NULL, organization = NULL, timezone = NULL, channels = '[]'::jsonb,
                tags = '{}', deliverable = false, opted_out = true, snoozed_until = NULL,
                erased_at = now(), updated_at = now()
            WHERE id = $1
            """,
            contact_id,
        )
        await self._scrub_proposal_topics(contact_id, refs)
        await self._scrub_round_plans(refs)
        return contact_id

    async def _scrub_round_plans(self, refs: set[Ref]) -> None:
        """Rounds keep who they could not place (`stats.unplaced_sample`) and dry runs their
        plan (`plan[].participants`), both by (source, external_id): the erased person's
        entries become placeholders (a reason stays). Found by jsonb containment, which
        compares strings exactly, whatever their characters (a text search of the JSON would
        miss ids that json.dumps escapes, as every non-ASCII one)."""
        ordered = sorted(refs)
        rows = await self._conn.fetch(
            """
            SELECT r.id, r.stats, r.plan FROM matcher.rounds r
            WHERE EXISTS (
                SELECT 1 FROM unnest($1::text[], $2::text[]) AS t(s, e)
                WHERE r.stats -> 'unplaced_sample' @> jsonb_build_array(
                          jsonb_build_object('source', t.s, 'external_id', t.e))
                   OR r.plan @> jsonb_build_array(jsonb_build_object(
                          'participants', jsonb_build_array(
                              jsonb_build_object('source', t.s, 'external_id', t.e)))))
            ORDER BY r.id
            FOR UPDATE
            """,
            [r[0] for r in ordered],
            [r[1] for r in ordered],
        )
        for row in rows:
            stats, plan = _json_value(row["stats"]), _json_value(row["plan"])
            await self._conn.execute(
                "UPDATE matcher.rounds SET stats = $2::text::jsonb, plan = $3::text::jsonb "
                "WHERE id = $1",
                row["id"],
                json.dumps(_without_refs(stats, refs)) if stats is not None else None,
                json.dumps(_without_refs(plan, refs)) if plan is not None else None,
            )

    async def _scrub_proposal_topics(self, contact_id: int, refs: set[Ref]) -> None:
        """Proposals keep who sought and who offered each topic: the erased person's refs go."""
        rows = await self._conn.fetch(
            """
            SELECT p.id, p.topics FROM matcher.proposals p
            JOIN matcher.proposal_participants pp ON pp.proposal_id = p.id
            WHERE pp.contact_id = $1
            ORDER BY p.id
            FOR UPDATE OF p
            """,
            contact_id,
        )
        placeholder = {"source": ERASED, "external_id": ERASED}
        for row in rows:
            topics = row["topics"]
            topics = json.loads(topics) if isinstance(topics, str) else topics
            changed = False
            for topic in topics:
                for role in ("seeker", "offerer"):
                    who = topic.get(role)
                    if who and (who.get("source"), who.get("external_id")) in refs:
                        topic[role] = placeholder
                        changed = True
            if changed:
                await self._conn.execute(
                    "UPDATE matcher.proposals SET topics = $2::text::jsonb WHERE id = $1",
                    row["id"],
                    json.dumps(topics),
                )

    async def _forget_unrelayed(self, refs: Sequence[Ref]) -> None:
        """Drop the matcher's events naming the person that the relay has not published yet:
        a proposal with them is never delivered (the notifier would drop it anyway)."""
        await self._conn.execute(
            """
            DELETE FROM messaging.outbox o
            USING unnest($2::text[], $3::text[]) AS t(s, e)
            WHERE o.producer = $1
              AND o.routing_key IN ('intro.proposed.v1', 'resource.proposed.v1')
              AND (
                convert_from(o.body, 'UTF8')::jsonb -> 'data' -> 'participants'
                    @> jsonb_build_array(jsonb_build_object('source', t.s, 'external_id', t.e))
                OR convert_from(o.body, 'UTF8')::jsonb -> 'data' -> 'recipient'
                    @> jsonb_build_object('source', t.s, 'external_id', t.e)
              )
            """,
            CONSUMER,
            [r[0] for r in refs],
            [r[1] for r in refs],
        )


def _json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _without_refs(value: Any, refs: set[Ref]) -> Any:
    """The JSON value with every {source, external_id} object of `refs` replaced by the
    placeholder (its other keys, such as an unplaced person's reason, kept)."""
    if isinstance(value, list):
        return [_without_refs(v, refs) for v in value]
    if isinstance(value, dict):
        if (value.get("source"), value.get("external_id")) in refs:
            return {**value, "source": ERASED, "external_id": ERASED}
        return {k: _without_refs(v, refs) for k, v in value.items()}
    return value


def _round(r: asyncpg.Record) -> RoundRow:
    return RoundRow(
        id=r["id"],
        pool=r["pool"],
        group_size=r["group_size"],
        seed=r["seed"],
        serendipity=float(r["serendipity"]),
        dry_run=r["dry_run"],
        status=r["status"],
        worker=r["worker"],
        attempts=r["attempts"],
        stats=r["stats"],
        plan=r["plan"],
        error=r["error"],
        requested_at=r["requested_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


def _pool(r: asyncpg.Record) -> PoolRow:
    return PoolRow(
        name=r["name"],
        selector=r["selector"],
        group_size=r["group_size"],
        serendipity=float(r["serendipity"]),
        rules=r["rules"],
        every_seconds=r["every_seconds"],
        next_round_at=r["next_round_at"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


class RoundsUnitOfWork(MatcherUnitOfWork):
    """Pools and rounds: the statements of `POST /v1/pools`, `/v1/rounds` and the round worker."""

    async def upsert_pool(self, pool: PoolRow) -> tuple[PoolRow, bool]:
        """Create or replace a pool; True when it was created."""
        row = await self._conn.fetchrow(
            """
            INSERT INTO matcher.pools AS p
                (name, selector, group_size, serendipity, rules, every_seconds, next_round_at)
            VALUES ($1, $2::jsonb, $3, $4, $5::jsonb, $6,
                    CASE WHEN $6::int IS NULL THEN NULL
                         ELSE now() + make_interval(secs => $6::int) END)
            ON CONFLICT (name) DO UPDATE SET
                selector = EXCLUDED.selector, group_size = EXCLUDED.group_size,
                serendipity = EXCLUDED.serendipity, rules = EXCLUDED.rules,
                every_seconds = EXCLUDED.every_seconds,
                next_round_at = CASE WHEN EXCLUDED.every_seconds IS NULL THEN NULL
                                     ELSE coalesce(p.next_round_at, EXCLUDED.next_round_at) END,
                updated_at = now()
            RETURNING *, (xmax = 0) AS created
            """,
            pool.name,
            pool.selector,
            pool.group_size,
            pool.serendipity,
            pool.rules,
            pool.every_seconds,
        )
        return _pool(row), bool(row["created"])

    async def pools(self) -> list[PoolRow]:
        return [
            _pool(r) for r in await self._conn.fetch("SELECT * FROM matcher.pools ORDER BY name")
        ]

    async def pool(self, name: str) -> PoolRow | None:
        row = await self._conn.fetchrow("SELECT * FROM matcher.pools WHERE name = $1", name)
        return _pool(row) if row else None

    async def create_round(
        self,
        round_id: UUID,
        pool: PoolRow,
        group_size: int,
        seed: int,
        serendipity: float,
        dry_run: bool,
    ) -> RoundRow:
        row = await self._conn.fetchrow(
            """
            INSERT INTO matcher.rounds (id, pool, group_size, seed, serendipity, dry_run)
            VALUES ($1, $2, $3, $4, $5, $6)
            RETURNING *
            """,
            round_id,
            pool.name,
            group_size,
            seed,
            serendipity,
            dry_run,
        )
        await self._conn.execute("NOTIFY roac_matcher_rounds")
        return _round(row)

    async def schedule_due_rounds(self, seeds: Sequence[int]) -> int:
        """Request a round for each pool whose schedule is due, and move its schedule on;
        SKIP LOCKED lets several matchers run this loop without requesting a round twice."""
        created = await self._conn.fetchval(
            """
            WITH locked AS (
                SELECT name, group_size, serendipity FROM matcher.pools
                WHERE next_round_at <= now()
                ORDER BY name LIMIT 64 FOR UPDATE SKIP LOCKED
            ), due AS (
                SELECT *, row_number() OVER (ORDER BY name) AS n FROM locked
            ), moved AS (
                -- The next one a period later; a schedule missed for long resumes from now.
                UPDATE matcher.pools p
                SET next_round_at = greatest(p.next_round_at, now() - make_interval(
                        secs => p.every_seconds)) + make_interval(secs => p.every_seconds)
                FROM due WHERE p.name = due.name
            ), requested AS (
                INSERT INTO matcher.rounds (id, pool, group_size, seed, serendipity)
                SELECT gen_random_uuid(), due.name, due.group_size, ($1::bigint[])[due.n],
                       due.serendipity
                FROM due
                RETURNING id
            )
            SELECT count(*) FROM requested
            """,
            list(seeds),
        )
        return int(created)

    async def claim_round(self, worker: UUID, lease_seconds: float) -> RoundRow | None:
        """Take the oldest round waiting, or one whose worker's lease ran out (it crashed)."""
        row = await self._conn.fetchrow(
            """
            UPDATE matcher.rounds SET status = 'running', worker = $1,
                lease_until = now() + make_interval(secs => $2::float8),
                started_at = coalesce(started_at, now()), attempts = attempts + 1
            WHERE id = (
                SELECT id FROM matcher.rounds
                WHERE status = 'pending' OR (status = 'running' AND lease_until < now())
                ORDER BY requested_at LIMIT 1 FOR UPDATE SKIP LOCKED
            )
            RETURNING *
            """,
            worker,
            lease_seconds,
        )
        return _round(row) if row else None

    async def hold_round(self, round_id: UUID, worker: UUID) -> bool:
        """Lock the round for its final write; False when another worker has taken it over."""
        owner = await self._conn.fetchval(
            "SELECT worker FROM matcher.rounds WHERE id = $1 AND status = 'running' FOR UPDATE",
            round_id,
        )
        return bool(owner == worker)

    async def finish_round(
        self,
        round_id: UUID,
        status: str,
        stats: dict[str, Any] | None,
        plan: list[dict[str, Any]] | None,
        error: str | None = None,
    ) -> None:
        await self._conn.execute(
            """
            UPDATE matcher.rounds SET status = $2, stats = $3::jsonb, plan = $4::jsonb,
                error = $5, finished_at = now(), lease_until = NULL
            WHERE id = $1
            """,
            round_id,
            status,
            stats,
            plan,
            error,
        )

    async def round(self, round_id: UUID) -> RoundRow | None:
        row = await self._conn.fetchrow("SELECT * FROM matcher.rounds WHERE id = $1", round_id)
        return _round(row) if row else None

    async def round_proposals(
        self, round_id: UUID, limit: int, after: UUID | None
    ) -> list[dict[str, Any]]:
        rows = await self._conn.fetch(
            """
            SELECT p.id, p.score, p.reason, p.topics, p.created_at,
                   (SELECT jsonb_agg(jsonb_build_object('source', i.source,
                                                        'external_id', i.external_id)
                                     ORDER BY pp.contact_id)
                    FROM matcher.proposal_participants pp
                    CROSS JOIN LATERAL (
                        SELECT source, external_id FROM matcher.identities
                        WHERE contact_id = pp.contact_id
                        ORDER BY created_at, source, external_id LIMIT 1) AS i
                    WHERE pp.proposal_id = p.id) AS participants
            FROM matcher.proposals p
            WHERE p.round_id = $1 AND ($3::uuid IS NULL OR p.id > $3)
            ORDER BY p.id LIMIT $2
            """,
            round_id,
            limit,
            after,
        )
        return [
            {
                "id": r["id"],
                "participants": r["participants"],
                "score": r["score"],
                "reason": r["reason"],
                "topics": r["topics"],
                "created_at": r["created_at"],
            }
            for r in rows
        ]

    async def round_feedback(self, round_id: UUID) -> dict[str, Any]:
        rows = await self._conn.fetch(
            """
            SELECT f.outcome, count(*) AS n, avg(f.rating) AS rating
            FROM matcher.feedback f JOIN matcher.proposals p ON p.id = f.proposal_id
            WHERE p.round_id = $1 GROUP BY f.outcome
            """,
            round_id,
        )
        return {r["outcome"]: r["n"] for r in rows}

    async def pool_members(self, selector: dict[str, list[str]]) -> list[MemberRow]:
        """Reachable, not opted-out contacts the pool's selector takes in (every listed
        criterion must hold; within one, any value)."""
        tags = selector.get("tags") or None
        sources = selector.get("sources") or None
        organizations = [o.casefold() for o in selector.get("organizations") or []] or None
        rows = await self._conn.fetch(
            """
            SELECT c.id, c.organization, c.timezone, c.snoozed_until,
                   -- the newest proposal: one backward step on (contact_id, created_at)
                   (SELECT max(pp.created_at) FROM matcher.proposal_participants pp
                    WHERE pp.contact_id = c.id) AS last_introduced_at
            FROM matcher.contacts c
            WHERE c.deliverable AND NOT c.opted_out
              AND ($1::text[] IS NULL OR c.tags && $1::text[])
              AND ($2::text[] IS NULL OR EXISTS (
                    SELECT 1 FROM matcher.identities i
                    WHERE i.contact_id = c.id AND i.source = ANY($2::text[])))
              AND ($3::text[] IS NULL OR lower(c.organization) = ANY($3::text[]))
            ORDER BY c.id
            """,
            tags,
            sources,
            organizations,
        )
        return [
            MemberRow(
                r["id"],
                r["organization"],
                r["timezone"],
                r["snoozed_until"],
                r["last_introduced_at"],
            )
            for r in rows
        ]

    async def all_topic_stats(self, contact_ids: Sequence[int]) -> dict[int, TopicStats]:
        """Statistics of every topic these contacts hold."""
        rows = await self._conn.fetch(
            """
            SELECT t.id, t.name, t.people, t.meetings FROM matcher.topics t
            WHERE t.id IN (SELECT DISTINCT topic_id FROM matcher.interests
                           WHERE contact_id = ANY($1::bigint[]))
            """,
            list(contact_ids),
        )
        return {
            r["id"]: TopicStats(r["name"], r["people"], topic_boost(r["meetings"])) for r in rows
        }


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
    async def rounds(self) -> AsyncIterator[RoundsUnitOfWork]:
        """One transaction over pools and rounds (and everything a round writes)."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield RoundsUnitOfWork(conn, self._erasures)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[RoundsUnitOfWork]:
        """A read-only, repeatable-read transaction: a round plans on one consistent view."""
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield RoundsUnitOfWork(conn, self._erasures)
