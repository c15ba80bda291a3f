"""People: their opt-outs, the advisory lock that serialises what one person's opt-out,
unsubscribe and erasure do, the erasure tombstones (HMAC digests: shared/erasure.py), and the
erasure itself, which scrubs them from every notifier table and from events not yet relayed."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.notifier.store.outbox import PRODUCER
from services.notifier.store.rules import OPEN_STATES_SQL, UNSENT_SQL, opted_out_sql
from shared.erasure import ERASED, ErasureDigests, legacy_digest

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


class PeopleStore:
    def __init__(self, conn: asyncpg.Connection, erasures: ErasureDigests) -> None:
        self._conn = conn
        self._erasures = erasures

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
            f"""
            SELECT t.s AS source, t.e AS external_id
            FROM unnest($1::text[], $2::text[]) AS t(s, e)
            WHERE {opted_out_sql("t.s", "t.e")}
            """,  # noqa: S608 - constant fragments
            [r[0] for r in refs],
            [r[1] for r in refs],
        )
        return {(r["source"], r["external_id"]) for r in rows}

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
        for table in ("notifier.opt_outs", "notifier.preferences"):
            await self._conn.execute(
                f"DELETE FROM {table} WHERE source = $1 AND external_id = $2",  # noqa: S608
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
            f"""
            UPDATE notifier.deliveries
            SET recipient_source = $3, recipient_external_id = $3 || ':' || id::text,
                last_error = NULL, updated_at = now(),
                status = CASE WHEN status IN {UNSENT_SQL} THEN 'cancelled' ELSE status END
            WHERE recipient_source = $1 AND recipient_external_id = $2
            RETURNING id
            """,  # noqa: S608 - constant fragments
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
                                    'contact.opted_out.v1', 'contact.preferences_changed.v1',
                                    'intro.feedback_given.v1',
                                    -- what their preferences page changed of their interests
                                    'interest.declared.v1', 'interest.withdrawn.v1')
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
            f"""
            UPDATE notifier.deliveries SET status = 'cancelled', updated_at = now()
            WHERE proposal_id = $1 AND status IN {UNSENT_SQL}
            """,  # noqa: S608 - constant fragments
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
            f"""
            UPDATE notifier.intros
            SET intro = $2::text::jsonb, updated_at = now(),
                state = CASE WHEN state IN {OPEN_STATES_SQL} THEN 'declined' ELSE state END
            WHERE id = $1
            """,  # noqa: S608 - constant fragments
            intro_id,
            json.dumps(intro),
        )
