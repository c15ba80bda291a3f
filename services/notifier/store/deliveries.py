"""Delivery rows (one per introduction or resource proposal, kind and recipient): inserted,
locked for an attempt with what they belong to, recorded in flight before a send and with
their result after, settled when orphaned, parked and made pending again. What each change
means: services/notifier/delivery_lifecycle.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from services.notifier.planning import PlannedDelivery
from services.notifier.store.rows import (
    DeliveryRecord,
    ProposalRecord,
    ResourceRecord,
    delivery_row,
    intro_row,
)
from services.notifier.store.rules import opted_out_sql
from shared.events import ResourceData

# Whether anyone a delivery goes to opted out: its recipient (a resource), or the seats at its
# positions (an ask or an introduction).
_OPTED_OUT = f"""CASE WHEN d.kind = 'resource'
                THEN {opted_out_sql("d.recipient_source", "d.recipient_external_id")}
            ELSE EXISTS (
                SELECT 1 FROM notifier.intro_seats s
                WHERE s.intro_id = d.proposal_id AND s.position = ANY(d.positions)
                  AND {opted_out_sql("s.source", "s.external_id")}
            ) END"""  # noqa: S608 - constant fragments


class DeliveryStore:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(
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

    async def lock_with_proposals(
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
        by_id: dict[UUID, ProposalRecord] = {r["id"]: intro_row(r) for r in intros}
        rows = await self._conn.fetch(
            f"""
            SELECT d.*, {_OPTED_OUT} AS opted_out,
            r.proposal AS resource_proposal, r.correlation_id AS resource_correlation_id,
            r.proposed_at AS resource_proposed_at
            FROM notifier.deliveries d
            LEFT JOIN notifier.resources r ON d.kind = 'resource' AND r.id = d.proposal_id
            WHERE d.id = ANY($1::uuid[])
            ORDER BY d.id
            FOR UPDATE OF d
            """,  # noqa: S608 - constant fragments
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
                locked[r["id"]] = (proposal, delivery_row(r), bool(r["opted_out"]))
        return locked

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
        return delivery_row(row) if row else None

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

    async def untried(self, proposal_ids: Sequence[UUID]) -> list[tuple[UUID, UUID]]:
        """(proposal, delivery) created for inline sending and never attempted (their
        handler stopped after the commit that created them): generation 0, no attempt."""
        rows = await self._conn.fetch(
            "SELECT proposal_id, id FROM notifier.deliveries "
            "WHERE proposal_id = ANY($1::uuid[]) AND status = 'pending' "
            "AND generation = 0 AND attempts = 0 AND not_before <= now() ORDER BY id",
            list(proposal_ids),
        )
        return [(r["proposal_id"], r["id"]) for r in rows]

    async def get(self, delivery_id: UUID) -> DeliveryRecord | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM notifier.deliveries WHERE id = $1", delivery_id
        )
        return delivery_row(row) if row else None

    async def save(self, delivery: DeliveryRecord, error: str | None = None) -> None:
        """Store the delivery's changed state (status, attempts, channel, generation, timing)."""
        await self._conn.execute(
            """
            UPDATE notifier.deliveries
            SET status = $2, attempts = $3, channel = $4, channel_index = $5, generation = $6,
                not_before = $7, last_error = $8, updated_at = now()
            WHERE id = $1
            """,
            delivery.id,
            str(delivery.status),
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
        return delivery_row(row) if row else None

    async def parked(self) -> list[DeliveryRecord]:
        rows = await self._conn.fetch(
            "SELECT * FROM notifier.deliveries WHERE status = 'parked' ORDER BY updated_at"
        )
        return [delivery_row(r) for r in rows]
