"""Every SQL statement ingest runs (idempotency keys)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg

from services.ingest.idempotency import KEPT_FOR, Stored, Verdict, judge


class IngestStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(
        self,
        integration: str,
        key: str,
        fingerprint: bytes,
        legacy: Callable[[], bytes] | None = None,
    ) -> tuple[Verdict, dict[str, Any] | None]:
        """Claim the key for this request, or say what the earlier one with it decided.
        `legacy` makes the request's fingerprint in its older form, only when the stored one
        is not this one's (a row from before keyed fingerprints)."""
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                """
                INSERT INTO ingest.idempotency_keys (integration, key, fingerprint, state)
                VALUES ($1, $2, $3, 'pending')
                ON CONFLICT DO NOTHING
                RETURNING true
                """,
                integration,
                key,
                fingerprint,
            )
            if inserted:
                return Verdict.PROCEED, None
            row = await conn.fetchrow(
                "SELECT fingerprint, state, response, updated_at, now() AS now "
                "FROM ingest.idempotency_keys WHERE integration = $1 AND key = $2 FOR UPDATE",
                integration,
                key,
            )
            stored = Stored(
                bytes(row["fingerprint"]), row["state"], row["response"], row["updated_at"]
            )
            older = legacy() if legacy is not None and stored.fingerprint != fingerprint else None
            verdict = judge(stored, fingerprint, row["now"], legacy=older)
            if verdict is Verdict.PROCEED:  # an abandoned claim: take it over (keyed from now)
                await conn.execute(
                    "UPDATE ingest.idempotency_keys SET updated_at = now(), fingerprint = $3 "
                    "WHERE integration = $1 AND key = $2",
                    integration,
                    key,
                    fingerprint,
                )
            return verdict, stored.response

    async def complete(self, integration: str, key: str, response: dict[str, Any]) -> None:
        await self._pool.execute(
            "UPDATE ingest.idempotency_keys SET state = 'done', response = $3, updated_at = now() "
            "WHERE integration = $1 AND key = $2",
            integration,
            key,
            response,
        )

    async def release(self, integration: str, key: str) -> None:
        """The request failed before anything was accepted: the key is free for a retry."""
        await self._pool.execute(
            "DELETE FROM ingest.idempotency_keys "
            "WHERE integration = $1 AND key = $2 AND state = 'pending'",
            integration,
            key,
        )

    async def forget_old(self, now: datetime | None = None) -> int:
        result: str = await self._pool.execute(
            "DELETE FROM ingest.idempotency_keys "
            "WHERE created_at < coalesce($1, now()) - $2::interval",
            now,
            KEPT_FOR,
        )
        return int(result.rsplit(" ", 1)[1])
