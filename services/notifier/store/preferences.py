"""A person's own preferences as the notifier holds them (`notifier.preferences`, what their
preferences page shows back), and opting back in (their row of `notifier.opt_outs` removed).
Runs on the connection of a notifier unit of work (`uow.preferences`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from services.notifier.preferences import Current


class PreferencesStore:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def current(self, source: str, external_id: str) -> Current:
        row = await self._conn.fetchrow(
            """
            SELECT p.paused_until, p.cap_per_week, p.language, p.opted_in_at,
                   EXISTS (SELECT 1 FROM notifier.opt_outs o
                           WHERE o.source = $1 AND o.external_id = $2) AS opted_out
            FROM (SELECT $1::text AS source, $2::text AS external_id) AS who
            LEFT JOIN notifier.preferences p USING (source, external_id)
            """,
            source,
            external_id,
        )
        return Current(
            paused_until=row["paused_until"],
            cap_per_week=row["cap_per_week"],
            language=row["language"],
            opted_out=row["opted_out"],
            opted_in_at=row["opted_in_at"],
        )

    async def save(self, source: str, external_id: str, changes: dict[str, Any]) -> None:
        """Record the changed fields (`paused_until`, `cap_per_week`, `language`, `opted_in`:
        its time); an opt-in also removes their opt-out."""
        await self._conn.execute(
            """
            INSERT INTO notifier.preferences
                (source, external_id, paused_until, cap_per_week, language, opted_in_at)
            VALUES ($1, $2, $4, $6, $8, $10)
            ON CONFLICT (source, external_id) DO UPDATE SET
                paused_until = CASE WHEN $3 THEN $4 ELSE notifier.preferences.paused_until END,
                cap_per_week = CASE WHEN $5 THEN $6 ELSE notifier.preferences.cap_per_week END,
                language = CASE WHEN $7 THEN $8 ELSE notifier.preferences.language END,
                opted_in_at = CASE WHEN $9 THEN $10 ELSE notifier.preferences.opted_in_at END,
                updated_at = now()
            """,
            source,
            external_id,
            "paused_until" in changes,
            changes.get("paused_until"),
            "cap_per_week" in changes,
            changes.get("cap_per_week"),
            "language" in changes,
            changes.get("language"),
            "opted_in" in changes,
            _moment(changes.get("opted_in")),
        )
        if "opted_in" in changes:
            await self._conn.execute(
                "DELETE FROM notifier.opt_outs WHERE source = $1 AND external_id = $2",
                source,
                external_id,
            )


def _moment(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None
