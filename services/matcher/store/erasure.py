"""Erasure: tombstones (keyed digests, never the id), and everything of the person scrubbed or
dropped: identities, interests, blocks, the contact row, their refs in proposals, round plans
and not yet relayed events. Runs on the connection (and transaction) of a matcher unit of work
(`uow.erasure`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.matcher.store.identities import IdentityRecords
from services.matcher.store.rows import Ref
from shared.erasure import ERASED, ErasureDigests, legacy_digest

CONSUMER = "matcher"


class ErasureRecords:
    def __init__(
        self, conn: asyncpg.Connection, erasures: ErasureDigests, identities: IdentityRecords
    ) -> None:
        self._conn = conn
        self._erasures = erasures
        self.identities = identities

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

    async def erase(self, ref: Ref, erased_at: datetime) -> set[Ref]:
        """Erase one person: a tombstone for each of their identities (a digest, never the id),
        the identities, interests (topic counts follow) and blocks deleted, the contact row
        scrubbed and opted out, their refs in stored proposals and in not yet relayed events
        replaced or dropped. Returns every identity of the person erased (`ref` itself for
        one never seen)."""
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
            return refs
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
            SET name = NULL, organization = NULL, timezone = NULL, language = NULL,
                channels = '[]'::jsonb, tags = '{}', deliverable = false, opted_out = true,
                snoozed_until = NULL, paused_until = NULL, own_cap_per_week = NULL,
                own_language = NULL, opted_in_at = NULL, own_cap_per_month = NULL,
                channel_order = NULL,
                erased_at = now(), updated_at = now()
            WHERE id = $1
            """,
            contact_id,
        )
        await self._scrub_proposal_topics(contact_id, refs)
        await self._scrub_round_plans(refs)
        await self._scrub_blocks_declared_by_others(refs)
        return refs

    async def _scrub_blocks_declared_by_others(self, refs: set[Ref]) -> None:
        """Other people's contact events may list the erased person among those they block
        (`profile -> 'blocks'`, as {source, external_id}): those entries go (the block itself,
        a matcher.blocks row, went with the person). One statement per identity, so that the
        containment test uses the partial index of the profiles that list blocks (0020)."""
        for source, external_id in sorted(refs):
            await self._conn.execute(
                """
                UPDATE matcher.identities i
                SET profile = jsonb_set(i.profile, '{blocks}', coalesce((
                    SELECT jsonb_agg(b) FROM jsonb_array_elements(i.profile -> 'blocks') AS b
                    WHERE NOT (b ->> 'source' = $1 AND b ->> 'external_id' = $2)
                ), '[]'::jsonb))
                WHERE i.profile -> 'blocks' <> '[]'::jsonb
                  AND i.profile -> 'blocks' @> jsonb_build_array(
                      jsonb_build_object('source', $1::text, 'external_id', $2::text))
                """,
                source,
                external_id,
            )

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
