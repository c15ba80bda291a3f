"""Every SQL statement the notifier runs, behind a unit of work (one transaction).

Lock order, everywhere: the introduction row first, then its delivery rows. The answer handler
and the delivery worker both follow it, so they wait for each other instead of deadlocking.
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

from services.notifier.optin import Answer, IntroState, Role, Seat
from services.notifier.planning import PlannedDelivery
from shared import outbox
from shared.erasure import ERASED, ErasureDigests, legacy_digest
from shared.events import DeliveryKind, Event, IntroData, Participant, ResourceData

PRODUCER = "notifier"


@dataclass(frozen=True, slots=True)
class IntroRecord:
    id: UUID
    mode: str
    state: IntroState
    intro: IntroData
    correlation_id: str
    proposed_at: datetime
    asked_until: datetime | None

    @property
    def participants(self) -> list[Participant]:
        """Whom a delivery's `positions` index."""
        return self.intro.participants


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    """A resource proposed to one person (resource.proposed.v1): no answers, no state of its
    own; its one delivery row says where it stands."""

    id: UUID
    resource: ResourceData
    correlation_id: str
    proposed_at: datetime

    @property
    def participants(self) -> list[Participant]:
        return [self.resource.recipient]


# What a delivery row belongs to (its `proposal_id`).
ProposalRecord = IntroRecord | ResourceRecord


@dataclass(frozen=True, slots=True)
class NewResource:
    resource: ResourceData
    correlation_id: str
    proposed_at: datetime


@dataclass(frozen=True, slots=True)
class NewIntro:
    intro: IntroData
    mode: str
    state: IntroState
    correlation_id: str
    proposed_at: datetime
    asked_until: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: UUID
    proposal_id: UUID
    kind: DeliveryKind
    positions: tuple[int, ...]
    recipient_source: str
    recipient_external_id: str
    channel: str
    channel_index: int
    status: str
    attempts: int
    generation: int
    not_before: datetime
    # Set while an attempt is in flight (recorded before its provider is called, cleared with
    # its result): when it started and its claim (services/notifier/in_flight.py).
    in_flight_since: datetime | None = None
    in_flight_token: UUID | None = None
    resends: int = 0


def _intro(row: asyncpg.Record) -> IntroRecord:
    return IntroRecord(
        id=row["id"],
        mode=row["mode"],
        state=IntroState(row["state"]),
        intro=IntroData.model_validate(row["intro"]),
        correlation_id=row["correlation_id"],
        proposed_at=row["proposed_at"],
        asked_until=row["asked_until"],
    )


def _delivery(row: asyncpg.Record) -> DeliveryRecord:
    return DeliveryRecord(
        id=row["id"],
        proposal_id=row["proposal_id"],
        kind=DeliveryKind(row["kind"]),
        positions=tuple(row["positions"]),
        recipient_source=row["recipient_source"],
        recipient_external_id=row["recipient_external_id"],
        channel=row["channel"],
        channel_index=row["channel_index"],
        status=row["status"],
        attempts=row["attempts"],
        generation=row["generation"],
        not_before=row["not_before"],
        in_flight_since=row["in_flight_since"],
        in_flight_token=row["in_flight_token"],
        resends=row["resends"],
    )


class NotifierUnitOfWork:
    def __init__(self, conn: asyncpg.Connection, erasures: ErasureDigests | None = None) -> None:
        self._conn = conn
        self._erasures = erasures or ErasureDigests(None)

    # Introductions and their seats

    async def insert_intros(self, intros: Sequence[NewIntro]) -> set[UUID]:
        """Record new introductions; return the ids recorded now (not before)."""
        rows = await self._conn.fetch(
            """
            INSERT INTO notifier.intros
                (id, mode, state, intro, correlation_id, proposed_at, asked_until)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[],
                                 $6::timestamptz[], $7::timestamptz[])
            ON CONFLICT (id) DO NOTHING
            RETURNING id
            """,
            [n.intro.proposal_id for n in intros],
            [n.mode for n in intros],
            [n.state.value for n in intros],
            [n.intro.model_dump(mode="json") for n in intros],
            [n.correlation_id for n in intros],
            [n.proposed_at for n in intros],
            [n.asked_until for n in intros],
        )
        return {r["id"] for r in rows}

    async def insert_seats(self, seated: Sequence[tuple[IntroData, Sequence[Seat]]]) -> None:
        rows = [
            (intro.proposal_id, s.position, intro.participants[s.position], s)
            for intro, seats in seated
            for s in seats
        ]
        await self._conn.execute(
            """
            INSERT INTO notifier.intro_seats (intro_id, position, source, external_id, role, answer)
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],
                                 $6::text[])
            """,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2].source for r in rows],
            [r[2].external_id for r in rows],
            [r[3].role.value for r in rows],
            [r[3].answer.value for r in rows],
        )

    async def lock_intro(self, intro_id: UUID) -> IntroRecord | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM notifier.intros WHERE id = $1 FOR UPDATE", intro_id
        )
        return _intro(row) if row else None

    async def seats(self, intro_id: UUID) -> list[Seat]:
        rows = await self._conn.fetch(
            "SELECT position, role, answer FROM notifier.intro_seats WHERE intro_id = $1 "
            "ORDER BY position",
            intro_id,
        )
        return [Seat(r["position"], Role(r["role"]), Answer(r["answer"])) for r in rows]

    async def save_step(
        self, intro_id: UUID, state: IntroState, seats: Sequence[Seat], asked_until: datetime | None
    ) -> None:
        await self._conn.execute(
            "UPDATE notifier.intros SET state = $2, asked_until = coalesce($3, asked_until), "
            "updated_at = now() WHERE id = $1",
            intro_id,
            state.value,
            asked_until,
        )
        await self._conn.execute(
            """
            UPDATE notifier.intro_seats AS s
            SET answer = u.answer,
                answered_at = CASE
                    WHEN s.answer <> u.answer AND u.answer IN ('accepted', 'declined', 'expired')
                    THEN now() ELSE s.answered_at END
            FROM unnest($2::int[], $3::text[]) AS u(position, answer)
            WHERE s.intro_id = $1 AND s.position = u.position
            """,
            intro_id,
            [s.position for s in seats],
            [s.answer.value for s in seats],
        )

    async def set_intro_state(self, intro_id: UUID, state: IntroState) -> None:
        await self._conn.execute(
            "UPDATE notifier.intros SET state = $2, updated_at = now() WHERE id = $1",
            intro_id,
            state.value,
        )

    async def lock_due_for_expiry(self, now: datetime, limit: int) -> list[UUID]:
        rows = await self._conn.fetch(
            """
            SELECT id FROM notifier.intros
            WHERE state = 'asked' AND asked_until < $1
            ORDER BY asked_until LIMIT $2
            FOR UPDATE SKIP LOCKED
            """,
            now,
            limit,
        )
        return [r["id"] for r in rows]

    async def open_intros_of(self, source: str, external_id: str) -> list[UUID]:
        rows = await self._conn.fetch(
            """
            SELECT DISTINCT s.intro_id FROM notifier.intro_seats s
            JOIN notifier.intros i ON i.id = s.intro_id
            WHERE s.source = $1 AND s.external_id = $2 AND i.state IN ('asked', 'accepted')
            ORDER BY s.intro_id
            """,
            source,
            external_id,
        )
        return [r["intro_id"] for r in rows]

    # Resources

    async def insert_resources(self, resources: Sequence[NewResource]) -> set[UUID]:
        """Record new resource proposals; return the ids recorded now (not before, and not a
        resource already proposed to the same person under another id)."""
        rows = await self._conn.fetch(
            """
            INSERT INTO notifier.resources
                (id, resource_id, recipient_source, recipient_external_id, proposal,
                 correlation_id, proposed_at)
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[],
                                 $6::text[], $7::timestamptz[])
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
            [n.resource.proposal_id for n in resources],
            [n.resource.resource_id for n in resources],
            [n.resource.recipient.source for n in resources],
            [n.resource.recipient.external_id for n in resources],
            [n.resource.model_dump(mode="json") for n in resources],
            [n.correlation_id for n in resources],
            [n.proposed_at for n in resources],
        )
        return {r["id"] for r in rows}

    async def resource_deliveries(self, resource_id: UUID, limit: int) -> list[dict[str, Any]]:
        """Per recipient of a resource: its delivery's status (no names or addresses)."""
        rows = await self._conn.fetch(
            """
            SELECT r.id, r.recipient_source, r.recipient_external_id, r.created_at,
                   d.channel, d.status, d.attempts, d.sent_at, d.updated_at
            FROM notifier.resources r
            LEFT JOIN notifier.deliveries d ON d.proposal_id = r.id AND d.kind = 'resource'
            WHERE r.resource_id = $1
            ORDER BY r.recipient_source, r.recipient_external_id
            LIMIT $2
            """,
            resource_id,
            limit,
        )
        return [
            {
                "proposal_id": r["id"],
                "recipient": {
                    "source": r["recipient_source"],
                    "external_id": r["recipient_external_id"],
                },
                "channel": r["channel"],
                "status": r["status"],
                "attempts": r["attempts"] or 0,
                "proposed_at": r["created_at"],
                "sent_at": r["sent_at"],
                "updated_at": r["updated_at"],
            }
            for r in rows
        ]

    # Deliveries

    async def insert_deliveries(
        self, planned: Sequence[PlannedDelivery], status: str = "pending"
    ) -> list[UUID]:
        """Insert the planned rows not inserted before; return the ids that are new. A row
        inserted `suppressed` records a message deliberately not sent (an opted-out person)."""
        rows = await self._conn.fetch(
            """
            INSERT INTO notifier.deliveries
                (id, proposal_id, kind, positions, recipient_source, recipient_external_id,
                 channel, not_before, channel_index, status)
            SELECT u.id, u.proposal_id, u.kind, string_to_array(u.positions, ',')::int[], u.source,
                   u.external_id, u.channel, u.not_before, u.channel_index, $10
            FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                        $7::text[], $8::timestamptz[], $9::int[])
                 AS u(proposal_id, id, kind, positions, source, external_id, channel, not_before,
                      channel_index)
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
            [p.proposal_id for p in planned],
            [p.id for p in planned],
            [p.kind.value for p in planned],
            [",".join(map(str, p.positions)) for p in planned],
            [p.recipient_source for p in planned],
            [p.recipient_external_id for p in planned],
            [p.channel.value for p in planned],
            [p.not_before for p in planned],
            [p.channel_index for p in planned],
            status,
        )
        return [r["id"] for r in rows]

    async def lock_for_deliveries(
        self, delivery_ids: Sequence[UUID]
    ) -> dict[UUID, tuple[ProposalRecord, DeliveryRecord, bool]]:
        """Lock the deliveries' introductions, then the deliveries (the lock order, each in id
        order), and say whether any recipient of each opted out: two statements for a group.
        A resource's delivery comes with its proposal (read, not locked: nothing changes a
        resource row, and the delivery row's lock is what keeps its copies apart)."""
        ids = sorted(set(delivery_ids))
        intros = await self._conn.fetch(
            """
            SELECT * FROM notifier.intros
            WHERE id IN (SELECT proposal_id FROM notifier.deliveries WHERE id = ANY($1::uuid[]))
            ORDER BY id
            FOR UPDATE
            """,
            ids,
        )
        by_id: dict[UUID, ProposalRecord] = {r["id"]: _intro(r) for r in intros}
        rows = await self._conn.fetch(
            """
            SELECT d.*, CASE WHEN d.kind = 'resource' THEN EXISTS (
                SELECT 1 FROM notifier.opt_outs o
                WHERE o.source = d.recipient_source AND o.external_id = d.recipient_external_id
            ) ELSE EXISTS (
                SELECT 1 FROM notifier.intro_seats s
                JOIN notifier.opt_outs o ON o.source = s.source AND o.external_id = s.external_id
                WHERE s.intro_id = d.proposal_id AND s.position = ANY(d.positions)
            ) END AS opted_out,
            r.proposal AS resource_proposal, r.correlation_id AS resource_correlation_id,
            r.proposed_at AS resource_proposed_at
            FROM notifier.deliveries d
            LEFT JOIN notifier.resources r ON d.kind = 'resource' AND r.id = d.proposal_id
            WHERE d.id = ANY($1::uuid[])
            ORDER BY d.id
            FOR UPDATE OF d
            """,
            ids,
        )
        locked: dict[UUID, tuple[ProposalRecord, DeliveryRecord, bool]] = {}
        for r in rows:
            proposal = by_id.get(r["proposal_id"])
            if proposal is None and r["resource_proposal"] is not None:
                proposal = ResourceRecord(
                    id=r["proposal_id"],
                    resource=ResourceData.model_validate(r["resource_proposal"]),
                    correlation_id=r["resource_correlation_id"],
                    proposed_at=r["resource_proposed_at"],
                )
            if proposal is not None:
                locked[r["id"]] = (proposal, _delivery(r), bool(r["opted_out"]))
        return locked

    async def lock_intros(self, intro_ids: Iterable[UUID]) -> None:
        """Lock introductions (in id order) before their deliveries' results are written: the
        lock order, and what makes two groups finishing one introduction see each other."""
        ids = sorted(set(intro_ids))
        if ids:
            await self._conn.execute(
                "SELECT 1 FROM notifier.intros WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
                ids,
            )

    async def commit_without_waiting_for_disk(self) -> None:
        """This transaction's commit returns before its WAL reaches the disk (it is as durable
        as any once flushed, within a fraction of a second; only a crash of PostgreSQL's host
        in between loses it). For the delivery results only: their in-flight records are
        committed durably first, so a result lost that way leaves its delivery in flight, to be
        reconciled, never resent blindly; and the group's sends cost one disk flush, not two."""
        await self._conn.execute("SET LOCAL synchronous_commit = off")

    async def mark_in_flight(self, claims: Sequence[tuple[UUID, UUID, str]], at: datetime) -> None:
        """Attempts about to be handed to their providers: (id, claim token, idempotency key),
        one statement; committed before any of them is sent."""
        await self._conn.execute(
            """
            UPDATE notifier.deliveries AS d
            SET in_flight_token = u.token, in_flight_key = u.key, in_flight_since = $4,
                updated_at = now()
            FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS u(id, token, key)
            WHERE d.id = u.id
            """,
            [c[0] for c in claims],
            [c[1] for c in claims],
            [c[2] for c in claims],
            at,
        )

    async def mark_sent(self, sent: Sequence[tuple[UUID, int, str, str, UUID]]) -> dict[UUID, str]:
        """Deliveries sent: (id, attempts, channel, provider key, claim token); rows and
        attempt records in one statement. Only rows still holding the claim are written (an
        attempt reconciled meanwhile is someone else's); a row closed while its message was in
        flight (cancelled, suppressed) keeps its status and gets the attempt and `sent_at`.
        Returns each written row's status now ('sent', or the status it kept)."""
        rows = await self._conn.fetch(
            """
            WITH u AS (
                SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::uuid[])
                    AS u(id, attempts, channel, provider_key, token)
            ), sent AS (
                UPDATE notifier.deliveries AS d
                SET status = CASE WHEN d.status = 'pending' THEN 'sent' ELSE d.status END,
                    attempts = u.attempts, provider_message_id = u.provider_key,
                    last_error = NULL, sent_at = now(), updated_at = now(),
                    in_flight_token = NULL, in_flight_key = NULL, in_flight_since = NULL
                FROM u
                WHERE d.id = u.id AND d.in_flight_token = u.token
                RETURNING d.id, d.status, u.channel
            ), attempts AS (
                INSERT INTO notifier.delivery_attempts (delivery_id, attempt, channel, outcome)
                SELECT s.id,
                       coalesce((SELECT max(a.attempt) FROM notifier.delivery_attempts a
                                 WHERE a.delivery_id = s.id), 0) + 1,
                       s.channel, 'sent'
                FROM sent s
            )
            SELECT id, status FROM sent
            """,
            [s[0] for s in sent],
            [s[1] for s in sent],
            [s[2] for s in sent],
            [s[3] for s in sent],
            [s[4] for s in sent],
        )
        return {r["id"]: r["status"] for r in rows}

    async def release_claim(self, delivery_id: UUID, token: UUID) -> DeliveryRecord | None:
        """End an attempt in flight (its result is about to be recorded): the row as it is now,
        or None when the claim is no longer this attempt's (reconciled meanwhile)."""
        row = await self._conn.fetchrow(
            """
            UPDATE notifier.deliveries
            SET in_flight_token = NULL, in_flight_key = NULL, in_flight_since = NULL
            WHERE id = $1 AND in_flight_token = $2
            RETURNING *
            """,
            delivery_id,
            token,
        )
        return _delivery(row) if row else None

    async def settle_in_flight(
        self, delivery_id: UUID, channel: str, detail: str, resent: bool
    ) -> None:
        """An orphaned attempt taken up by reconciliation: recorded as an attempt whose outcome
        is unknown (it counts as one), the claim dropped, and a resend counted if `resent`."""
        await self._conn.execute(
            """
            UPDATE notifier.deliveries
            SET in_flight_token = NULL, in_flight_key = NULL, in_flight_since = NULL,
                attempts = attempts + 1, resends = resends + $2::int, updated_at = now()
            WHERE id = $1
            """,
            delivery_id,
            int(resent),
        )
        await self.record_attempt(delivery_id, channel, "unknown", detail[:500])

    async def orphaned_in_flight(self, before: datetime, limit: int) -> list[tuple[UUID, int]]:
        """(delivery, generation) of pending deliveries in flight since before `before`, the
        oldest first; skipping rows locked by a worker right now."""
        rows = await self._conn.fetch(
            """
            SELECT id, generation FROM notifier.deliveries
            WHERE in_flight_since < $1 AND status = 'pending'
            ORDER BY in_flight_since
            LIMIT $2
            FOR UPDATE SKIP LOCKED
            """,
            before,
            limit,
        )
        return [(r["id"], r["generation"]) for r in rows]

    async def finish_if_delivered(self, intro_ids: Iterable[UUID]) -> None:
        """An introduction is `introduced` once none of its introductions is left to send."""
        await self._conn.execute(
            """
            UPDATE notifier.intros AS i SET state = 'introduced', updated_at = now()
            WHERE i.id = ANY($1::uuid[]) AND i.state = 'accepted' AND NOT EXISTS (
                SELECT 1 FROM notifier.deliveries d
                WHERE d.proposal_id = i.id AND d.kind = 'intro'
                  AND d.status IN ('pending', 'parked')
            )
            """,
            sorted(set(intro_ids)),
        )

    async def untried(self, intro_ids: Sequence[UUID]) -> list[tuple[UUID, UUID]]:
        """(introduction, delivery) created for inline sending and never attempted (their
        handler stopped after the commit that created them): generation 0, no attempt."""
        rows = await self._conn.fetch(
            "SELECT proposal_id, id FROM notifier.deliveries "
            "WHERE proposal_id = ANY($1::uuid[]) AND status = 'pending' "
            "AND generation = 0 AND attempts = 0 AND not_before <= now() ORDER BY id",
            list(intro_ids),
        )
        return [(r["proposal_id"], r["id"]) for r in rows]

    async def delivery(self, delivery_id: UUID) -> DeliveryRecord | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM notifier.deliveries WHERE id = $1", delivery_id
        )
        return _delivery(row) if row else None

    async def lock_delivery(self, delivery_id: UUID) -> DeliveryRecord | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM notifier.deliveries WHERE id = $1 FOR UPDATE",
            delivery_id,
        )
        return _delivery(row) if row else None

    async def save_delivery(self, delivery: DeliveryRecord, error: str | None = None) -> None:
        """Store the delivery's changed state (status, attempts, channel, generation, timing)."""
        await self._conn.execute(
            """
            UPDATE notifier.deliveries
            SET status = $2, attempts = $3, channel = $4, channel_index = $5, generation = $6,
                not_before = $7, last_error = $8, updated_at = now()
            WHERE id = $1
            """,
            delivery.id,
            delivery.status,
            delivery.attempts,
            delivery.channel,
            delivery.channel_index,
            delivery.generation,
            delivery.not_before,
            error[:500] if error else None,
        )

    async def record_attempt(
        self, delivery_id: UUID, channel: str, outcome: str, detail: str | None
    ) -> None:
        await self._conn.execute(
            """
            INSERT INTO notifier.delivery_attempts (delivery_id, attempt, channel, outcome, detail)
            SELECT $1, coalesce(max(attempt), 0) + 1, $2, $3, $4
            FROM notifier.delivery_attempts WHERE delivery_id = $1
            """,
            delivery_id,
            channel,
            outcome,
            detail,
        )

    async def cancel_pending(self, intro_id: UUID, positions: Iterable[int] | None = None) -> int:
        """Cancel deliveries of the introduction not yet sent (to everyone, or to `positions`)."""
        result: str = await self._conn.execute(
            """
            UPDATE notifier.deliveries SET status = 'cancelled', updated_at = now()
            WHERE proposal_id = $1 AND status = 'pending'
              AND ($2::int[] IS NULL OR positions && $2::int[])
            """,
            intro_id,
            list(positions) if positions is not None else None,
        )
        return int(result.rsplit(" ", 1)[1])

    async def reset_parked(self, delivery_id: UUID) -> DeliveryRecord | None:
        """Make a parked delivery pending again, with a fresh budget of attempts."""
        row = await self._conn.fetchrow(
            """
            UPDATE notifier.deliveries
            SET status = 'pending', attempts = 0, generation = generation + 1, not_before = now(),
                updated_at = now()
            WHERE id = $1 AND status = 'parked'
            RETURNING *
            """,
            delivery_id,
        )
        return _delivery(row) if row else None

    async def parked(self) -> list[DeliveryRecord]:
        rows = await self._conn.fetch(
            "SELECT * FROM notifier.deliveries WHERE status = 'parked' ORDER BY updated_at"
        )
        return [_delivery(r) for r in rows]

    # Opt-outs

    async def opt_out(self, source: str, external_id: str) -> bool:
        inserted = await self._conn.fetchval(
            "INSERT INTO notifier.opt_outs (source, external_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING true",
            source,
            external_id,
        )
        return bool(inserted)

    async def opted_out(self, refs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        refs = list(refs)
        rows = await self._conn.fetch(
            """
            SELECT o.source, o.external_id
            FROM unnest($1::text[], $2::text[]) AS t(s, e)
            JOIN notifier.opt_outs o ON o.source = t.s AND o.external_id = t.e
            """,
            [r[0] for r in refs],
            [r[1] for r in refs],
        )
        return {(r["source"], r["external_id"]) for r in rows}

    # Erasure

    async def lock_person(self, source: str, external_id: str) -> None:
        """Serialise what one person's opt-out, unsubscribe and erasure do (a transaction-level
        advisory lock on their digest): an unsubscribe racing the erasure either lands before
        it (and is scrubbed by it) or sees the tombstone and stores nothing."""
        digest = self._erasures.digest(source, external_id)
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            _PERSON_LOCK_CLASS,
            int.from_bytes(digest[:4], "big", signed=True),
        )

    async def erased(self, refs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these people were erased (their tombstone digest is stored: keyed, or a
        legacy one from before ROAC_ERASURE_KEY)."""
        digests = self._erasures.lookups(refs)
        if not digests:
            return set()
        rows = await self._conn.fetch(
            "SELECT digest FROM notifier.erasures WHERE digest = ANY($1::bytea[])", list(digests)
        )
        return {digests[bytes(r["digest"])] for r in rows}

    async def erase(self, source: str, external_id: str, erased_at: datetime) -> None:
        """Erase one person: a tombstone (a digest), then every introduction naming them is
        closed with nothing more sent to anyone, and their name, addresses and ids are replaced
        by placeholders in introductions, seats, deliveries, attempts, resources and events not
        yet relayed. Call after `Answers.withdraw` (which closes their open asks properly)."""
        # A legacy (unkeyed) tombstone of theirs gives way to the keyed one.
        legacy = None
        if self._erasures.keyed:
            legacy = await self._conn.fetchval(
                "DELETE FROM notifier.erasures WHERE digest = $1 AND NOT keyed RETURNING erased_at",
                legacy_digest(source, external_id),
            )
        await self._conn.execute(
            """
            INSERT INTO notifier.erasures (digest, erased_at, keyed) VALUES ($1, $2, $3)
            ON CONFLICT (digest) DO UPDATE
                SET erased_at = greatest(notifier.erasures.erased_at, EXCLUDED.erased_at)
            """,
            self._erasures.digest(source, external_id),
            max(erased_at, legacy) if legacy is not None else erased_at,
            self._erasures.keyed,
        )
        await self._conn.execute(
            "DELETE FROM notifier.opt_outs WHERE source = $1 AND external_id = $2",
            source,
            external_id,
        )
        intro_ids = await self._conn.fetch(
            "SELECT DISTINCT intro_id FROM notifier.intro_seats "
            "WHERE source = $1 AND external_id = $2 ORDER BY intro_id",
            source,
            external_id,
        )
        for record in intro_ids:
            await self._close_and_scrub_intro(record["intro_id"], source, external_id)
        await self._conn.execute(
            "UPDATE notifier.intro_seats SET source = $3, external_id = $3 "
            "WHERE source = $1 AND external_id = $2",
            source,
            external_id,
            ERASED,
        )
        deliveries = await self._conn.fetch(
            """
            UPDATE notifier.deliveries
            SET recipient_source = $3, recipient_external_id = $3 || ':' || id::text,
                last_error = NULL, updated_at = now(),
                status = CASE WHEN status IN ('pending', 'parked') THEN 'cancelled'
                              ELSE status END
            WHERE recipient_source = $1 AND recipient_external_id = $2
            RETURNING id
            """,
            source,
            external_id,
            ERASED,
        )
        await self._conn.execute(
            "UPDATE notifier.delivery_attempts SET detail = NULL "
            "WHERE delivery_id = ANY($1::uuid[])",
            [r["id"] for r in deliveries],
        )
        await self._conn.execute(
            """
            UPDATE notifier.resources
            SET recipient_source = $3, recipient_external_id = $3 || ':' || id::text,
                proposal = jsonb_set(proposal, '{recipient}', $4::text::jsonb)
            WHERE recipient_source = $1 AND recipient_external_id = $2
            """,
            source,
            external_id,
            ERASED,
            json.dumps(_ERASED_PERSON),
        )
        await self._conn.execute(
            """
            DELETE FROM messaging.outbox o
            WHERE o.producer = $1
              AND o.routing_key IN ('delivery.succeeded.v1', 'delivery.failed.v1',
                                    'contact.opted_out.v1')
              AND (
                convert_from(o.body, 'UTF8')::jsonb -> 'data' -> 'recipient'
                    @> jsonb_build_object('source', $2::text, 'external_id', $3::text)
                OR convert_from(o.body, 'UTF8')::jsonb -> 'data'
                    @> jsonb_build_object('source', $2::text, 'external_id', $3::text)
              )
            """,
            PRODUCER,
            source,
            external_id,
        )

    async def _close_and_scrub_intro(self, intro_id: UUID, source: str, external_id: str) -> None:
        """An introduction naming an erased person must not go out: close it, cancel what is
        not sent (to anyone), and replace them in its stored proposal."""
        row = await self._conn.fetchrow(
            "SELECT intro FROM notifier.intros WHERE id = $1 FOR UPDATE", intro_id
        )
        if row is None:
            return
        await self._conn.execute(
            "UPDATE notifier.deliveries SET status = 'cancelled', updated_at = now() "
            "WHERE proposal_id = $1 AND status IN ('pending', 'parked')",
            intro_id,
        )
        intro: dict[str, Any] = row["intro"]
        intro = json.loads(intro) if isinstance(intro, str) else intro
        for i, person in enumerate(intro.get("participants", [])):
            if (person.get("source"), person.get("external_id")) == (source, external_id):
                intro["participants"][i] = dict(_ERASED_PERSON)
        for topic in intro.get("topics", []):
            for role in ("seeker", "offerer"):
                who = topic.get(role)
                if who and (who.get("source"), who.get("external_id")) == (source, external_id):
                    topic[role] = {"source": ERASED, "external_id": ERASED}
        await self._conn.execute(
            """
            UPDATE notifier.intros
            SET intro = $2::text::jsonb, updated_at = now(),
                state = CASE WHEN state IN ('asked', 'accepted') THEN 'declined' ELSE state END
            WHERE id = $1
            """,
            intro_id,
            json.dumps(intro),
        )

    # Outbox

    async def enqueue(
        self,
        events: Sequence[Event],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if exchange is None:
            await outbox.enqueue(self._conn, PRODUCER, events)
        else:
            await outbox.enqueue(
                self._conn,
                PRODUCER,
                events,
                exchange=exchange,
                routing_key=routing_key,
                headers=headers,
            )

    # Reading

    async def list_intros(
        self,
        *,
        state: str | None,
        limit: int,
        before: datetime | None,
        round_id: UUID | None = None,
    ) -> list[dict[str, Any]]:
        rows = await self._conn.fetch(
            """
            SELECT i.id, i.mode, i.state, i.intro, i.created_at, i.updated_at, i.asked_until,
                   (SELECT json_agg(json_build_object(
                        'source', s.source, 'external_id', s.external_id, 'role', s.role,
                        'answer', s.answer, 'answered_at', s.answered_at) ORDER BY s.position)
                    FROM notifier.intro_seats s WHERE s.intro_id = i.id) AS seats,
                   (SELECT json_agg(json_build_object(
                        'kind', d.kind, 'recipient', json_build_object(
                            'source', d.recipient_source, 'external_id', d.recipient_external_id),
                        'channel', d.channel, 'status', d.status, 'attempts', d.attempts,
                        'sent_at', d.sent_at) ORDER BY d.created_at, d.id)
                    FROM notifier.deliveries d WHERE d.proposal_id = i.id) AS deliveries
            FROM notifier.intros i
            WHERE ($1::text IS NULL OR i.state = $1)
              AND ($3::timestamptz IS NULL OR i.created_at < $3)
              AND ($4::text IS NULL OR i.intro->>'round_id' = $4)
            ORDER BY i.created_at DESC, i.id
            LIMIT $2
            """,
            state,
            limit,
            before,
            str(round_id) if round_id else None,
        )
        found = []
        for r in rows:
            intro = r["intro"] or {}
            found.append(
                {
                    "id": r["id"],
                    "mode": r["mode"],
                    "state": r["state"],
                    "score": intro.get("score"),
                    "reason": intro.get("reason"),
                    "topics": [t.get("topic") for t in intro.get("topics", [])],
                    "round": intro.get("round_id"),
                    "created_at": r["created_at"],
                    "updated_at": r["updated_at"],
                    "asks_expire_at": r["asked_until"],
                    "participants": json.loads(r["seats"]) if r["seats"] else [],
                    "deliveries": json.loads(r["deliveries"]) if r["deliveries"] else [],
                }
            )
        return found


# The advisory lock class of `lock_person` ("roac" in ASCII).
_PERSON_LOCK_CLASS = 0x726F6163

# Who an erased participant or recipient becomes in the rows that stay.
_ERASED_PERSON: dict[str, Any] = {
    "source": ERASED,
    "external_id": ERASED,
    "name": ERASED,
    "organization": None,
    "timezone": None,
    "channels": [],
}


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
