"""The notifier's own key for reading people back from the matcher (its preferences pages:
ROAC_NOTIFIER_MATCHER_API_KEY), scoped as docs/notifier.md says: `contacts:read` on every
source, nothing else. A stack is started with the secret in its environment, and the key is
stored afterwards (the matcher sees a new key at once: `roac keys` announces it with NOTIFY)."""

from __future__ import annotations

import asyncio

import asyncpg

from shared.api_key_store import insert_key
from shared.api_keys import digest, new_secret

READER_SECRET = new_secret()
READER_ENV = {"ROAC_NOTIFIER_MATCHER_API_KEY": READER_SECRET}


def grant_reader(database_url: str) -> None:
    """Store the key `notifier-preferences` (contacts:read, any source) for READER_SECRET."""

    async def store() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await insert_key(
                conn, "notifier-preferences", digest(READER_SECRET), ["contacts:read"], None
            )
        finally:
            await conn.close()

    asyncio.run(store())
