"""Contacts: profiles, block lists, opt-out, who can be reached and who may take another
introduction (read under row locks), and how each is presented in a proposal. Runs on the
connection (and transaction) of a matcher unit of work (`uow.contacts`).

The one SQL fragment for "reachable", for "within the rolling week" and for "within the rolling
month" live here, beside the Python rules they mirror (`services/matcher/availability.py`);
`tests/unit/test_availability.py` holds the two side by side. A person's own channel order is
applied with `shared.events.in_preferred_order` (in Python, not SQL) when they are presented.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.matcher.store.rows import (
    Availability,
    MemberRow,
    OwnCaps,
    PreferenceChange,
    ProfileRow,
)
from shared.events import (
    ChannelAddress,
    ChannelType,
    ContactRef,
    Participant,
    in_preferred_order,
)


def reachable(alias: str) -> str:
    """SQL: the contact row `alias` can be reached and has not opted out
    (`availability.reachable`)."""
    return f"{alias}.deliverable AND NOT {alias}.opted_out"


# SQL: the start of the rolling week the weekly caps count in (`availability.ROLLING_WEEK`).
WEEK_AGO = "now() - interval '7 days'"
# SQL: the start of the rolling month a person's own monthly cap counts in
# (`availability.ROLLING_MONTH`).
MONTH_AGO = "now() - interval '30 days'"
# SQL: the contact row `c` is not snoozed (`availability.snoozed`).
NOT_SNOOZED = "(c.snoozed_until IS NULL OR c.snoozed_until <= now())"


def intros_since(start: str) -> str:
    """SQL: introductions of the contact row `c` after `start` (one of the constants above)."""
    return f"""(SELECT count(*) FROM matcher.proposal_participants pp
                    WHERE pp.contact_id = c.id AND pp.created_at > {start})"""  # noqa: S608 (constant fragments, no input)


# SQL: introductions of the contact row `c` within the rolling week (`Standing.recent_intros`).
RECENT_INTROS = intros_since(WEEK_AGO)
# SQL: within the rolling month (`Standing.month_intros`), counted only for a person with a
# monthly cap of their own (`availability.within_monthly_cap`: no cap, nothing to count).
MONTH_INTROS = f"CASE WHEN c.own_cap_per_month IS NULL THEN 0 ELSE {intros_since(MONTH_AGO)} END"

# SQL: the contact row `c` is a person (neither erased nor merged into another) whom a pool's
# selector takes in: every criterion given holds, within one any value ($1 tags, $2 sources of
# an identity, $3 organizations, compared case-blind with PostgreSQL's own lower() on both
# sides, so the database's locale decides for both; NULL: not given). Arguments: `in_pool`.
IN_POOL = """c.erased_at IS NULL AND c.merged_into IS NULL
              AND ($1::text[] IS NULL OR c.tags && $1::text[])
              AND ($2::text[] IS NULL OR EXISTS (
                    SELECT 1 FROM matcher.identities i
                    WHERE i.contact_id = c.id AND i.source = ANY($2::text[])))
              AND ($3::text[] IS NULL OR lower(c.organization) IN (
                    SELECT lower(o) FROM unnest($3::text[]) AS o))"""


def in_pool(selector: Mapping[str, Sequence[str]]) -> tuple[str, list[list[str] | None]]:
    """SQL: whom a pool's selector takes in (`IN_POOL`, on the contact row `c`), with the
    arguments $1 to $3 of the statement it is used in. A round's members (`pool_members`) and
    the console's preview (`Directory.pool_size`) both select with it, so they never differ."""
    tags = list(selector.get("tags") or ()) or None
    sources = list(selector.get("sources") or ()) or None
    # Not casefold() here: Python's folding ("Straße" -> "strasse") is not PostgreSQL's lower().
    organizations = list(selector.get("organizations") or ()) or None
    return IN_POOL, [tags, sources, organizations]


# Lock contact rows ($1, ids) in id order, so writers cannot deadlock. NO KEY UPDATE: exclusive
# among writers like this one, yet compatible with the KEY SHARE locks this transaction's own
# foreign keys (interests, participants) took.
LOCK_CONTACTS = (
    "SELECT 1 FROM matcher.contacts WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE"
)


class ContactRecords:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

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
                -- The person's own pause and language (preferences page) outlast the integration's.
                snoozed_until = greatest(u.snoozed_until, c.paused_until),
                language = coalesce(c.own_language, u.language)
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[],
                        $7::timestamptz[], $8::text[], $9::timestamptz[], $11::text[])
                 AS u(id, name, organization, timezone, channels, deliverable, profile_at, tags,
                      snoozed_until, language)
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
            [r.language for r in ordered],
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

    async def population(self) -> int:
        value: int = await self._conn.fetchval(
            "SELECT value FROM matcher.counters WHERE name = 'contacts'"
        )
        return value

    async def reachable(self, contact_ids: Iterable[int]) -> set[int]:
        rows = await self._conn.fetch(
            f"SELECT id FROM matcher.contacts c WHERE id = ANY($1::bigint[]) AND {reachable('c')}",  # noqa: S608 (constant fragments, no input)
            list(set(contact_ids)),
        )
        return {r["id"] for r in rows}

    async def participant_rows(self, contact_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Delivery details of each contact under its oldest identity, as plain JSON-ready
        dicts (rounds serialise tens of thousands of them directly)."""
        rows = await self._conn.fetch(
            """
            SELECT c.id, c.name, c.organization, c.timezone, c.language, c.channels,
                   c.channel_order, i.source, i.external_id
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
                "language": r["language"],
                "channels": channels_in_their_order(r["channels"], r["channel_order"]),
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
        await self._conn.execute(LOCK_CONTACTS, ids)
        # A separate statement: under READ COMMITTED it reads a snapshot taken after the locks
        # were granted, so it sees what the previous holder committed.
        rows = await self._conn.fetch(
            f"""
            SELECT c.id, c.opted_out, c.deliverable, c.snoozed_until, c.own_cap_per_week,
                   c.own_cap_per_month, {RECENT_INTROS} AS recent, {MONTH_INTROS} AS month
            FROM matcher.contacts c WHERE c.id = ANY($1::bigint[])
            """,  # noqa: S608 (constant fragments, no input)
            ids,
        )
        return {
            r["id"]: Availability(
                r["recent"],
                r["opted_out"],
                r["deliverable"],
                r["snoozed_until"],
                r["own_cap_per_week"],
                r["own_cap_per_month"],
                r["month"],
            )
            for r in rows
        }

    async def recent_intro_counts(self, contact_ids: Iterable[int]) -> dict[int, int]:
        rows = await self._conn.fetch(
            f"""
            SELECT c.id, {RECENT_INTROS} AS recent
            FROM unnest($1::bigint[]) AS c(id)
            """,  # noqa: S608 (constant fragments, no input)
            list(set(contact_ids)),
        )
        return {r["id"]: r["recent"] for r in rows if r["recent"]}

    async def own_caps(self, contact_ids: Iterable[int]) -> dict[int, OwnCaps]:
        """The caps of those who chose their own (the others have none), so that a round
        plans within them; the locked re-check (`lock_availability`) has the final word."""
        rows = await self._conn.fetch(
            f"""
            SELECT c.id, c.own_cap_per_week, c.own_cap_per_month, {MONTH_INTROS} AS month
            FROM matcher.contacts c
            WHERE c.id = ANY($1::bigint[])
              AND (c.own_cap_per_week IS NOT NULL OR c.own_cap_per_month IS NOT NULL)
            """,  # noqa: S608 (constant fragments, no input)
            list(set(contact_ids)),
        )
        return {
            r["id"]: OwnCaps(r["own_cap_per_week"], r["own_cap_per_month"], r["month"])
            for r in rows
        }

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

    async def apply_preferences(self, contact_id: int, change: PreferenceChange) -> bool:
        """A person's own choices (contact.preferences_changed.v1) on their contact row, unless
        a newer change of theirs is applied already; return whether it was applied. A pause
        moves `snoozed_until` with it (an integration's later snooze still holds); opting back
        in clears the opt-out of the contact and of every identity of it."""
        row = await self._conn.fetchrow(
            """
            UPDATE matcher.contacts AS c SET
                snoozed_until = CASE
                    WHEN NOT $2 THEN c.snoozed_until
                    WHEN c.snoozed_until IS NOT DISTINCT FROM c.paused_until THEN $3
                    ELSE greatest(c.snoozed_until, $3) END,
                paused_until = CASE WHEN $2 THEN $3 ELSE c.paused_until END,
                own_cap_per_week = CASE WHEN $4 THEN $5 ELSE c.own_cap_per_week END,
                own_cap_per_month = CASE WHEN $11 THEN $12 ELSE c.own_cap_per_month END,
                channel_order = CASE WHEN $13 THEN $14::text[] ELSE c.channel_order END,
                own_language = CASE WHEN $6 THEN $7 ELSE c.own_language END,
                language = CASE WHEN $6 THEN coalesce($7, c.language) ELSE c.language END,
                opted_out = CASE WHEN $8 THEN false ELSE c.opted_out END,
                opted_in_at = CASE WHEN $8 THEN $9 ELSE c.opted_in_at END,
                preferences_at = $10, updated_at = now()
            WHERE c.id = $1 AND c.erased_at IS NULL
              AND (c.preferences_at IS NULL OR c.preferences_at <= $10)
            RETURNING c.id
            """,
            contact_id,
            change.pause,
            change.paused_until,
            change.cap,
            change.cap_per_week,
            change.language_changed,
            change.language,
            change.opt_in,
            change.opted_in_at,
            change.at,
            change.cap_month,
            change.cap_per_month,
            change.channels,
            list(change.channel_order) or None,
        )
        if row is not None and change.opt_in:
            await self._conn.execute(
                "UPDATE matcher.identities SET opted_out = false "
                "WHERE contact_id = $1 AND opted_out",
                contact_id,
            )
        return row is not None

    # Pools

    async def pool_members(self, selector: Mapping[str, Sequence[str]]) -> list[MemberRow]:
        """People the pool's selector takes in (`in_pool`), the opted-out and unreachable too:
        a round lists them as left out, with the reason (`round_planning.unavailable_reason`)."""
        selected, arguments = in_pool(selector)
        rows = await self._conn.fetch(
            f"""
            SELECT c.id, c.organization, c.timezone, c.snoozed_until, c.opted_out,
                   c.deliverable,
                   -- the newest proposal: one backward step on (contact_id, created_at)
                   (SELECT max(pp.created_at) FROM matcher.proposal_participants pp
                    WHERE pp.contact_id = c.id) AS last_introduced_at
            FROM matcher.contacts c
            WHERE {selected}
            ORDER BY c.id
            """,  # noqa: S608 (constant fragments, no input)
            *arguments,
        )
        return [
            MemberRow(
                r["id"],
                r["organization"],
                r["timezone"],
                r["snoozed_until"],
                r["last_introduced_at"],
                r["opted_out"],
                r["deliverable"],
            )
            for r in rows
        ]


def channels_in_their_order(
    channels: list[dict[str, str]], order: list[str] | None
) -> list[dict[str, str]]:
    """The contact's channels as JSON-ready dicts, in the person's own order when they chose
    one (`shared.events.in_preferred_order`)."""
    plain = [{"type": c["type"], "address": c["address"]} for c in channels]
    if not order:
        return plain
    addresses = [
        ChannelAddress.model_construct(type=ChannelType(c["type"]), address=c["address"])
        for c in plain
    ]
    return [
        {"type": c.type.value, "address": c.address} for c in in_preferred_order(addresses, order)
    ]
