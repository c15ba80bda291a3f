"""Every SQL statement about API keys (`access.api_keys`): what `roac keys` runs and what each
service's keyring reads. A change is announced with NOTIFY (delivered at commit), so running
services reload their keys at once instead of at their next periodic refresh."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

NOTIFY_CHANNEL = "roac_api_keys"


class KeyNameTaken(Exception):
    """An active key already has this name."""


@dataclass(frozen=True)
class ActiveKey:
    key_id: int
    name: str
    digest: bytes


@dataclass(frozen=True)
class KeyRecord:
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


async def insert_key(conn: asyncpg.Connection, name: str, digest: bytes) -> None:
    try:
        await conn.execute(
            """
            WITH added AS (
                INSERT INTO access.api_keys (name, digest) VALUES ($1, $2) RETURNING 1
            )
            SELECT pg_notify($3, 'created') FROM added
            """,
            name,
            digest,
            NOTIFY_CHANNEL,
        )
    except asyncpg.UniqueViolationError as exc:
        raise KeyNameTaken(name) from exc


async def revoke_key(conn: asyncpg.Connection, name: str) -> bool:
    """Revoke the active key with this name; False when there is none."""
    rows = await conn.fetch(
        """
        WITH revoked AS (
            UPDATE access.api_keys SET revoked_at = now()
            WHERE name = $1 AND revoked_at IS NULL
            RETURNING 1
        )
        SELECT pg_notify($2, 'revoked') FROM revoked
        """,
        name,
        NOTIFY_CHANNEL,
    )
    return bool(rows)


async def all_keys(conn: asyncpg.Connection) -> list[KeyRecord]:
    rows = await conn.fetch(
        "SELECT name, created_at, last_used_at, revoked_at FROM access.api_keys "
        "ORDER BY name, created_at"
    )
    return [KeyRecord(r["name"], r["created_at"], r["last_used_at"], r["revoked_at"]) for r in rows]


async def active_keys(conn: asyncpg.Connection) -> list[ActiveKey]:
    rows = await conn.fetch("SELECT id, name, digest FROM access.api_keys WHERE revoked_at IS NULL")
    return [ActiveKey(r["id"], r["name"], bytes(r["digest"])) for r in rows]


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
