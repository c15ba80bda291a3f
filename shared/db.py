"""PostgreSQL connection pools (asyncpg), configured the same way in every service."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from shared.settings import Settings


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection returns to the pool: roac sets no session state on
    pooled connections (no SET, LISTEN or session advisory locks; those use their own
    connections). asyncpg's default reset would cost a round trip per transaction."""


async def create_pool(settings: Settings, *, max_size: int | None = None) -> asyncpg.Pool:
    size = max_size or settings.database_pool_size
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=60,
        server_settings={"application_name": "roac"},
    )
    return pool


class DatabaseCheck:
    """Whether PostgreSQL answers, over a connection of the check's own: a pool that is fully
    busy working through a backlog is no reason to call the database unreachable."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: asyncpg.Connection | None = None

    async def __call__(self) -> bool:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._url, timeout=2)
            value: Any = await self._conn.fetchval("SELECT 1", timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            await self.close()
            return False
        return bool(value == 1)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close(timeout=1)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()
