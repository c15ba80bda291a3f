"""Every SQL statement about API keys (`access.api_keys`): what `roac keys` runs and what each
service's keyring reads. A change is announced with NOTIFY (delivered at commit), so running
services reload their keys at once instead of at their next periodic refresh.

A name holds at most two active keys (slots 1 and 2, a unique index): enough to rotate a key
without downtime, never an unbounded pile of forgotten ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

NOTIFY_CHANNEL = "roac_api_keys"


class KeyNameTaken(Exception):
    """The name already has two active keys: revoke one first."""


@dataclass(frozen=True)
class ActiveKey:
    key_id: int
    name: str
    digest: bytes
    scopes: tuple[str, ...]
    sources: tuple[str, ...] | None  # None: any source


@dataclass(frozen=True)
class KeyRecord:
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    scopes: tuple[str, ...]
    sources: tuple[str, ...] | None
    slot: int


async def insert_key(
    conn: asyncpg.Connection,
    name: str,
    digest: bytes,
    scopes: Sequence[str],
    sources: Sequence[str] | None,
) -> int:
    """Store a key in the name's free slot and return the slot; KeyNameTaken when both slots
    hold active keys (two concurrent inserts for the last slot: one wins, by the index)."""
    try:
        slot = await conn.fetchval(
            """
            WITH free AS (
                SELECT s FROM (VALUES (1::smallint), (2::smallint)) AS v(s)
                WHERE NOT EXISTS (
                    SELECT 1 FROM access.api_keys
                    WHERE name = $1 AND slot = v.s AND revoked_at IS NULL
                )
                ORDER BY s LIMIT 1
            ), added AS (
                INSERT INTO access.api_keys (name, digest, scopes, sources, slot)
                SELECT $1, $2, $3::text[], $4::text[], s FROM free
                RETURNING slot
            )
            SELECT slot FROM added, LATERAL (SELECT pg_notify($5, 'created')) AS n
            """,
            name,
            digest,
            sorted(scopes),
            None if sources is None else sorted(sources),
            NOTIFY_CHANNEL,
        )
    except asyncpg.UniqueViolationError as exc:
        raise KeyNameTaken(name) from exc
    if slot is None:
        raise KeyNameTaken(name)
    return int(slot)


async def revoke_key(conn: asyncpg.Connection, name: str, *, oldest_only: bool = False) -> int:
    """Revoke the name's active keys (or only its oldest); how many were revoked."""
    rows = await conn.fetch(
        """
        WITH target AS (
            SELECT id FROM access.api_keys
            WHERE name = $1 AND revoked_at IS NULL
            ORDER BY created_at, id
            LIMIT CASE WHEN $3 THEN 1 ELSE 2 END
        ), revoked AS (
            UPDATE access.api_keys SET revoked_at = now()
            WHERE id IN (SELECT id FROM target)
            RETURNING 1
        )
        SELECT pg_notify($2, 'revoked') FROM revoked
        """,
        name,
        NOTIFY_CHANNEL,
        oldest_only,
    )
    return len(rows)


def _sources(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


async def all_keys(conn: asyncpg.Connection) -> list[KeyRecord]:
    rows = await conn.fetch(
        "SELECT name, created_at, last_used_at, revoked_at, scopes, sources, slot "
        "FROM access.api_keys ORDER BY name, created_at"
    )
    return [
        KeyRecord(
            r["name"],
            r["created_at"],
            r["last_used_at"],
            r["revoked_at"],
            tuple(r["scopes"]),
            _sources(r["sources"]),
            r["slot"],
        )
        for r in rows
    ]


async def active_keys(conn: asyncpg.Connection) -> list[ActiveKey]:
    rows = await conn.fetch(
        "SELECT id, name, digest, scopes, sources FROM access.api_keys WHERE revoked_at IS NULL"
    )
    return [
        ActiveKey(
            r["id"], r["name"], bytes(r["digest"]), tuple(r["scopes"]), _sources(r["sources"])
        )
        for r in rows
    ]


async def record_use(conn: asyncpg.Connection, used: Mapping[int, datetime]) -> None:
    """Move each key's last use forward (several processes report uses of the same key)."""
    if not used:
        return
    await conn.execute(
        """
        UPDATE access.api_keys AS k SET last_used_at = greatest(k.last_used_at, u.used_at)
        FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, used_at)
        WHERE k.id = u.id
        """,
        list(used),
        list(used.values()),
    )
