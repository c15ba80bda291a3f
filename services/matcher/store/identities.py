"""Every SQL statement of identity resolution: which contact an identity is (created when new),
identity profiles and match keys, merges and their undoing. Runs on the connection (and
transaction) of a matcher unit of work (`uow.identities`); the rules are in
`services/matcher/identity_keys.py`, the use case in `services/matcher/identity_resolution.py`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.matcher.scoring import pair_key
from services.matcher.store.rows import IdentityProfile, IdentityRow, MergeRow, Ref, Resolved


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _merge(r: asyncpg.Record) -> MergeRow:
    return MergeRow(
        r["id"],
        r["survivor_id"],
        r["absorbed_id"],
        tuple(r["identity_ids"]),
        r["matched_on"],
        tuple(r["proposal_ids"]),
        r["merged_at"],
        r["undone_at"],
        r["reason"],
        tuple(r["sources"]),
    )


def _identity(r: asyncpg.Record) -> IdentityRow:
    return IdentityRow(
        r["id"],
        r["source"],
        r["external_id"],
        r["contact_id"],
        r["opted_out"],
        _json(r["profile"]),
        r["profile_at"],
    )


class IdentityRecords:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

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

    async def known(self, refs: Iterable[Ref]) -> dict[Ref, Resolved]:
        """Each (source, external_id)'s contact and identity, for those that exist (none is
        created)."""
        return await self._identities(sorted(set(refs)))

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

    async def lock_keys(self, digests: Iterable[bytes]) -> None:
        """Lock each key's row (created first if new), in digest order: of two transactions
        bringing one key, the second waits here and then sees the first's identity."""
        missing = sorted(set(digests))
        # A row another transaction forgets (deleted while we waited for it) locks nothing:
        # created again and locked again, until every key is held.
        while missing:
            await self._conn.execute(
                "INSERT INTO matcher.match_keys (digest) "
                "SELECT d FROM unnest($1::bytea[]) AS t(d) ORDER BY d ON CONFLICT DO NOTHING",
                missing,
            )
            locked = await self._conn.fetch(
                "SELECT digest FROM matcher.match_keys WHERE digest = ANY($1::bytea[]) "
                "ORDER BY digest FOR UPDATE",
                missing,
            )
            held = {bytes(r["digest"]) for r in locked}
            missing = [d for d in missing if d not in held]

    async def forget_unused_keys(self, digests: Iterable[bytes], *, wait: bool = True) -> None:
        """Drop key rows no identity holds any more (after an erasure: even a digest of an
        email address is not kept for a person who is gone). With `wait=False` (a replaced
        key, on the contact events' hot path), a row another transaction holds is skipped,
        not waited for: that one is bringing the key, and the order `lock_keys` keeps stays
        the only order of key locks (no deadlock between two people swapping addresses)."""
        skip = "" if wait else " SKIP LOCKED"
        await self._conn.execute(
            f"""
            DELETE FROM matcher.match_keys WHERE digest IN (
                SELECT m.digest FROM matcher.match_keys m
                WHERE m.digest = ANY($1::bytea[])
                  AND NOT EXISTS (
                      SELECT 1 FROM matcher.identity_keys k WHERE k.digest = m.digest)
                ORDER BY m.digest FOR UPDATE{skip})
            """,  # noqa: S608 - a constant fragment
            sorted(set(digests)),
        )

    async def keys_of(self, contact_id: int) -> list[bytes]:
        rows = await self._conn.fetch(
            "SELECT k.digest FROM matcher.identity_keys k "
            "JOIN matcher.identities i ON i.id = k.identity_id WHERE i.contact_id = $1",
            contact_id,
        )
        return [bytes(r["digest"]) for r in rows]

    async def record_profiles(self, profiles: Sequence[IdentityProfile]) -> set[int]:
        """Keep each identity's own newest contact event (a late older one changes nothing);
        return the identities whose profile this replaced."""
        ordered = sorted(profiles, key=lambda p: p.identity_id)
        rows = await self._conn.fetch(
            """
            UPDATE matcher.identities AS i SET profile = u.profile::jsonb, profile_at = u.at
            FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS u(id, profile, at)
            WHERE i.id = u.id AND (i.profile_at IS NULL OR i.profile_at <= u.at)
            RETURNING i.id
            """,
            [p.identity_id for p in ordered],
            [json.dumps(p.profile) for p in ordered],
            [p.profile_at for p in ordered],
        )
        return {r["id"] for r in rows}

    async def replace_keys(self, keys: dict[int, set[bytes]]) -> None:
        """Set each identity's match keys to exactly these digests. A key an identity no longer
        has (a changed email address) is forgotten when nobody else holds it: a plain digest of
        a guessable address is not kept for a person who moved on, and erasure, which forgets
        the person's current keys, then leaves none of their earlier ones behind."""
        owners = sorted(keys)
        dropped = await self._conn.fetch(
            "DELETE FROM matcher.identity_keys WHERE identity_id = ANY($1::bigint[]) "
            "RETURNING digest",
            owners,
        )
        pairs = sorted((digest, owner) for owner in owners for digest in keys[owner])
        await self._conn.execute(
            """
            INSERT INTO matcher.identity_keys (digest, identity_id)
            SELECT * FROM unnest($1::bytea[], $2::bigint[]) ON CONFLICT DO NOTHING
            """,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
        )
        gone = {bytes(r["digest"]) for r in dropped} - {p[0] for p in pairs}
        if gone:
            await self.forget_unused_keys(gone, wait=False)

    async def key_owners(self, digests: Iterable[bytes]) -> dict[bytes, set[tuple[int, str]]]:
        """For each digest, the (live, not erased) contacts whose identities have it, each with
        the source of every identity that has it."""
        rows = await self._conn.fetch(
            """
            SELECT k.digest, i.contact_id, i.source FROM matcher.identity_keys k
            JOIN matcher.identities i ON i.id = k.identity_id
            WHERE k.digest = ANY($1::bytea[])
            """,
            list(set(digests)),
        )
        owners: dict[bytes, set[tuple[int, str]]] = {}
        for r in rows:
            owners.setdefault(bytes(r["digest"]), set()).add((r["contact_id"], r["source"]))
        return owners

    async def shared_contacts(self, contact_ids: Iterable[int]) -> set[int]:
        """Those of the contacts that have more than one identity (a merged person)."""
        rows = await self._conn.fetch(
            "SELECT contact_id FROM matcher.identities WHERE contact_id = ANY($1::bigint[]) "
            "GROUP BY contact_id HAVING count(*) > 1",
            sorted(set(contact_ids)),
        )
        return {r["contact_id"] for r in rows}

    async def vetoed(self, contact_a: int, contact_b: int) -> bool:
        """Whether an operator split identities of these two contacts before."""
        found: bool = await self._conn.fetchval(
            """
            SELECT EXISTS (
                SELECT 1 FROM matcher.identities a
                JOIN matcher.identities b ON b.contact_id = $2
                JOIN matcher.merge_vetoes v
                  ON v.identity_a = least(a.id, b.id) AND v.identity_b = greatest(a.id, b.id)
                WHERE a.contact_id = $1)
            """,
            contact_a,
            contact_b,
        )
        return found

    async def identities_of(self, contact_ids: Iterable[int]) -> list[IdentityRow]:
        rows = await self._conn.fetch(
            "SELECT id, source, external_id, contact_id, opted_out, profile, profile_at "
            "FROM matcher.identities "
            "WHERE contact_id = ANY($1::bigint[]) ORDER BY created_at, source, external_id",
            sorted(set(contact_ids)),
        )
        return [_identity(r) for r in rows]

    async def identity(self, ref: Ref) -> IdentityRow | None:
        row = await self._conn.fetchrow(
            "SELECT id, source, external_id, contact_id, opted_out, profile, profile_at "
            "FROM matcher.identities WHERE source = $1 AND external_id = $2",
            *ref,
        )
        return None if row is None else _identity(row)

    async def lock_contacts(self, contact_ids: Iterable[int]) -> None:
        """Row locks in id order: a proposal being written for either waits for the merge and
        then finds the absorbed contact gone (not deliverable)."""
        await self._conn.execute(
            "SELECT 1 FROM matcher.contacts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
            sorted(set(contact_ids)),
        )

    async def merge(
        self,
        merge_id: UUID,
        survivor: int,
        absorbed: int,
        matched_on: str,
        reason: str,
        sources: tuple[str, ...],
    ) -> tuple[int, ...]:
        """Move everything of `absorbed` to `survivor` and leave a tombstone; record the merge
        with why it was allowed; return the identity ids it brought. The caller locked both
        contacts."""
        conn = self._conn
        survivor_ids: list[int] = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM matcher.identities WHERE contact_id = $1", survivor
            )
        ]
        moved_ids: list[int] = [
            r["id"]
            for r in await conn.fetch(
                "UPDATE matcher.identities SET contact_id = $1 WHERE contact_id = $2 RETURNING id",
                survivor,
                absorbed,
            )
        ]
        # Interests without provenance (older than identity resolution) belong to the
        # contact's own identities: say so before the two sets are mixed.
        await conn.execute(
            "UPDATE matcher.interests SET via = $2::bigint[] WHERE contact_id = $1 AND via = '{}'",
            survivor,
            survivor_ids,
        )
        # A topic both held counts one person fewer once they are one.
        await _count_shared_topics(conn, survivor, absorbed, -1)
        await conn.execute(
            """
            WITH moved AS (
                DELETE FROM matcher.interests WHERE contact_id = $2
                RETURNING topic_id, kind, weight, declared_at,
                          CASE WHEN via = '{}' THEN $3::bigint[] ELSE via END AS via
            )
            INSERT INTO matcher.interests AS i
                (contact_id, topic_id, kind, weight, declared_at, via)
            SELECT $1, topic_id, kind, weight, declared_at, via FROM moved
            ORDER BY topic_id, kind
            ON CONFLICT (contact_id, topic_id, kind) DO UPDATE
                SET weight = CASE WHEN i.declared_at <= EXCLUDED.declared_at
                                  THEN EXCLUDED.weight ELSE i.weight END,
                    declared_at = greatest(i.declared_at, EXCLUDED.declared_at),
                    via = ARRAY(SELECT DISTINCT unnest(i.via || EXCLUDED.via) ORDER BY 1)
            """,
            survivor,
            absorbed,
            moved_ids,
        )
        # Blocks by or of the absorbed contact now concern the survivor.
        await conn.execute(
            """
            INSERT INTO matcher.blocks (contact_id, blocked_id)
            SELECT $1, blocked_id FROM matcher.blocks WHERE contact_id = $2 AND blocked_id <> $1
            UNION
            SELECT contact_id, $1 FROM matcher.blocks WHERE blocked_id = $2 AND contact_id <> $1
            ORDER BY 1, 2
            ON CONFLICT DO NOTHING
            """,
            survivor,
            absorbed,
        )
        await conn.execute(
            "DELETE FROM matcher.blocks WHERE contact_id = $1 OR blocked_id = $1", absorbed
        )
        # Their introductions count for the survivor (per-person cap, never the same group
        # twice); a proposal that already held both stays with the tombstone.
        moved_proposals: list[UUID] = [
            r["proposal_id"]
            for r in await conn.fetch(
                """
                UPDATE matcher.proposal_participants SET contact_id = $1
                WHERE contact_id = $2 AND proposal_id NOT IN (
                    SELECT proposal_id FROM matcher.proposal_participants WHERE contact_id = $1)
                RETURNING proposal_id
                """,
                survivor,
                absorbed,
            )
        ]
        if moved_proposals:
            await self._rekey_groups(moved_proposals, survivor, absorbed)
        opted_out: bool = await conn.fetchval(
            """
            UPDATE matcher.contacts SET
                merged_into = $2, name = NULL, organization = NULL, timezone = NULL,
                language = NULL, channels = '[]'::jsonb, tags = '{}', deliverable = false,
                snoozed_until = NULL,
                profile_at = NULL, updated_at = now()
            WHERE id = $1
            RETURNING opted_out
            """,
            absorbed,
            survivor,
        )
        if opted_out:  # whoever opted out under one identity stays out as the merged person
            await conn.execute(
                "UPDATE matcher.contacts SET opted_out = true WHERE id = $1", survivor
            )
        await conn.execute("UPDATE matcher.counters SET value = value - 1 WHERE name = 'contacts'")
        await conn.execute(
            """
            INSERT INTO matcher.merges (id, survivor_id, absorbed_id, identity_ids, matched_on,
                                        proposal_ids, reason, sources)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            """,
            merge_id,
            survivor,
            absorbed,
            moved_ids,
            matched_on,
            moved_proposals,
            reason,
            list(sources),
        )
        return tuple(moved_ids)

    async def _rekey_groups(self, proposal_ids: list[UUID], survivor: int, absorbed: int) -> None:
        """The groups the absorbed contact was in, under the survivor's id too: the merged person
        is never proposed the same group again."""
        rows = await self._conn.fetch(
            """
            SELECT g.group_key, g.last_proposed_at, g.declined FROM matcher.groups g
            WHERE g.group_key IN (
                SELECT group_key FROM matcher.proposals WHERE id = ANY($1::uuid[]))
            """,
            proposal_ids,
        )
        rekeyed: dict[str, tuple[datetime, bool]] = {}
        for r in rows:
            ids = [int(part) for part in r["group_key"].split(":")]
            key = pair_key(*(survivor if i == absorbed else i for i in ids))
            rekeyed[key] = (r["last_proposed_at"], r["declined"])
        ordered = sorted(rekeyed.items())
        await self._conn.execute(
            """
            INSERT INTO matcher.groups (group_key, last_proposed_at, declined)
            SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bool[])
            ON CONFLICT (group_key) DO UPDATE
                SET last_proposed_at = greatest(matcher.groups.last_proposed_at,
                                                EXCLUDED.last_proposed_at),
                    declined = matcher.groups.declined OR EXCLUDED.declined
            """,
            [k for k, _ in ordered],
            [v[0] for _, v in ordered],
            [v[1] for _, v in ordered],
        )

    async def merges_into(self, contact_id: int) -> list[MergeRow]:
        """The merges, not undone, that the contact absorbed others by, newest first."""
        rows = await self._conn.fetch(
            "SELECT * FROM matcher.merges WHERE survivor_id = $1 AND undone_at IS NULL "
            "ORDER BY merged_at DESC, id",
            contact_id,
        )
        return [_merge(r) for r in rows]

    async def merge_history(self, contact_id: int) -> list[MergeRow]:
        """Every merge, undone ones too, that joined this contact or a contact it absorbed
        (directly or through another), newest first."""
        rows = await self._conn.fetch(
            """
            WITH RECURSIVE person(id) AS (
                SELECT $1::bigint
                UNION
                SELECT c.id FROM matcher.contacts c JOIN person p ON c.merged_into = p.id
            )
            SELECT * FROM matcher.merges
            WHERE survivor_id IN (SELECT id FROM person) OR absorbed_id IN (SELECT id FROM person)
            ORDER BY merged_at DESC, id
            """,
            contact_id,
        )
        return [_merge(r) for r in rows]

    async def refs_of(self, identity_ids: Iterable[int]) -> dict[int, Ref]:
        """(source, external_id) of each identity that still exists (not erased)."""
        rows = await self._conn.fetch(
            "SELECT id, source, external_id FROM matcher.identities WHERE id = ANY($1::bigint[])",
            sorted(set(identity_ids)),
        )
        return {r["id"]: (r["source"], r["external_id"]) for r in rows}

    async def merge_by_id(self, merge_id: UUID) -> MergeRow | None:
        row = await self._conn.fetchrow("SELECT * FROM matcher.merges WHERE id = $1", merge_id)
        return None if row is None else _merge(row)

    async def undo_merge(self, merge: MergeRow) -> tuple[list[int], list[int]]:
        """Give the absorbed contact back its identities, the interests they declared, its
        introductions; veto merging them again. Returns (restored, remaining) identity ids.
        The caller locked both contacts; profiles and blocks are rebuilt by the caller."""
        conn = self._conn
        survivor, absorbed = merge.survivor_id, merge.absorbed_id
        restored: list[int] = [
            r["id"]
            for r in await conn.fetch(
                "UPDATE matcher.identities SET contact_id = $1 "
                "WHERE contact_id = $2 AND id = ANY($3::bigint[]) RETURNING id",
                absorbed,
                survivor,
                list(merge.identity_ids),
            )
        ]
        remaining: list[int] = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM matcher.identities WHERE contact_id = $1", survivor
            )
        ]
        await conn.execute(
            """
            INSERT INTO matcher.interests (contact_id, topic_id, kind, weight, declared_at, via)
            SELECT $1, topic_id, kind, weight, declared_at,
                   ARRAY(SELECT unnest(via) INTERSECT SELECT unnest($3::bigint[]) ORDER BY 1)
            FROM matcher.interests WHERE contact_id = $2 AND via && $3::bigint[]
            ORDER BY topic_id, kind
            ON CONFLICT DO NOTHING
            """,
            absorbed,
            survivor,
            restored,
        )
        await conn.execute(
            "DELETE FROM matcher.interests "
            "WHERE contact_id = $1 AND via <@ $2::bigint[] AND via <> '{}'",
            survivor,
            restored,
        )
        await conn.execute(
            """
            UPDATE matcher.interests
            SET via = ARRAY(SELECT unnest(via) EXCEPT SELECT unnest($2::bigint[]) ORDER BY 1)
            WHERE contact_id = $1 AND via && $2::bigint[]
            """,
            survivor,
            restored,
        )
        # A topic both sides hold again counts both people.
        await _count_shared_topics(conn, survivor, absorbed, +1)
        await conn.execute(
            "UPDATE matcher.proposal_participants SET contact_id = $1 "
            "WHERE contact_id = $2 AND proposal_id = ANY($3::uuid[])",
            absorbed,
            survivor,
            list(merge.proposal_ids),
        )
        await conn.execute(
            "UPDATE matcher.contacts SET merged_into = NULL, updated_at = now() WHERE id = $1",
            absorbed,
        )
        await conn.execute("UPDATE matcher.counters SET value = value + 1 WHERE name = 'contacts'")
        await conn.execute("UPDATE matcher.merges SET undone_at = now() WHERE id = $1", merge.id)
        pairs = sorted({(min(a, b), max(a, b)) for a in restored for b in remaining})
        await conn.execute(
            """
            INSERT INTO matcher.merge_vetoes (identity_a, identity_b)
            SELECT * FROM unnest($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING
            """,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
        )
        return restored, remaining

    async def set_opted_out(self, contact_id: int, opted_out: bool) -> None:
        await self._conn.execute(
            "UPDATE matcher.contacts SET opted_out = $2, updated_at = now() WHERE id = $1",
            contact_id,
            opted_out,
        )

    async def declared_blocks(self, contact_ids: Iterable[int]) -> list[tuple[int, Ref]]:
        """(contact, blocked identity) for every block any identity of the contacts declared,
        or an operator set on it (matcher.operator_blocks)."""
        rows = await self._conn.fetch(
            """
            SELECT i.contact_id, b ->> 'source' AS source, b ->> 'external_id' AS external_id
            FROM matcher.identities i
            CROSS JOIN LATERAL jsonb_array_elements(coalesce(i.profile -> 'blocks', '[]')) AS b
            WHERE i.contact_id = ANY($1::bigint[]) AND jsonb_array_length(
                coalesce(i.profile -> 'blocks', '[]')) > 0
            UNION ALL
            SELECT i.contact_id, other.source, other.external_id
            FROM matcher.operator_blocks o
            JOIN matcher.identities i ON i.id = o.identity_id
            JOIN matcher.identities other ON other.id = o.blocked_identity_id
            WHERE i.contact_id = ANY($1::bigint[])
            """,
            sorted(set(contact_ids)),
        )
        return [(r["contact_id"], (r["source"], r["external_id"])) for r in rows]

    async def add_operator_block(self, identity_id: int, blocked_identity_id: int) -> bool:
        """An operator's block of one identity by another; False when it was there already.
        The caller rebuilds the owner's block list (identity_resolution.rebuild_blocks)."""
        added = await self._conn.fetchval(
            """
            INSERT INTO matcher.operator_blocks (identity_id, blocked_identity_id)
            VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true
            """,
            identity_id,
            blocked_identity_id,
        )
        return bool(added)

    async def blockers_of(self, contact_id: int) -> set[int]:
        rows = await self._conn.fetch(
            "SELECT contact_id FROM matcher.blocks WHERE blocked_id = $1", contact_id
        )
        return {r["contact_id"] for r in rows}

    async def known_contacts(self, refs: Iterable[Ref]) -> dict[Ref, int]:
        """The contacts of these identities, for those that exist (none is created)."""
        ordered = sorted(set(refs))
        rows = await self._conn.fetch(
            """
            SELECT i.source, i.external_id, i.contact_id
            FROM unnest($1::text[], $2::text[]) AS t(s, e)
            JOIN matcher.identities i ON i.source = t.s AND i.external_id = t.e
            """,
            [r[0] for r in ordered],
            [r[1] for r in ordered],
        )
        return {(r["source"], r["external_id"]): r["contact_id"] for r in rows}


async def _count_shared_topics(conn: asyncpg.Connection, one: int, other: int, change: int) -> None:
    """Add `change` to the people count of each topic both contacts hold (a merge makes them
    one person: -1; an unmerge two again: +1), never below zero."""
    await conn.execute(
        """
        UPDATE matcher.topics SET people = greatest(people + $3::int, 0)
        WHERE id IN (SELECT topic_id FROM matcher.interests WHERE contact_id = $1
                     INTERSECT
                     SELECT topic_id FROM matcher.interests WHERE contact_id = $2)
        """,
        one,
        other,
        change,
    )
