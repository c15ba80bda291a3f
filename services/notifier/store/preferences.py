"""A person's own preferences as the notifier holds them (`notifier.preferences`, what their
preferences page shows back), and opting back in (their row of `notifier.opt_outs` removed).
Runs on the connection of a notifier unit of work (`uow.preferences`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.notifier.preferences import Current
from services.notifier.preferences_interests import InterestChange
from shared.events import ChannelType


class PreferencesStore:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def current(self, source: str, external_id: str) -> Current:
        row = await self._conn.fetchrow(
            """
            SELECT p.paused_until, p.cap_per_week, p.language, p.opted_in_at,
                   p.cap_per_month, p.channel_order, p.interest_changes,
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
            cap_per_month=row["cap_per_month"],
            channel_order=_order(row["channel_order"]),
            interest_changes=tuple(
                InterestChange.from_json(c) for c in _json(row["interest_changes"])
            ),
        )

    async def updated_at(self, source: str, external_id: str) -> datetime | None:
        """When their record last changed (None: no record yet)."""
        changed: datetime | None = await self._conn.fetchval(
            "SELECT updated_at FROM notifier.preferences WHERE source = $1 AND external_id = $2",
            source,
            external_id,
        )
        return changed

    async def save(
        self,
        source: str,
        external_id: str,
        changes: dict[str, Any],
        *,
        at: datetime | None = None,
    ) -> None:
        """Record the changed fields (`paused_until`, `cap_per_week`, `cap_per_month`,
        `channel_order`, `language`, `opted_in`: its time); an opt-in also removes their
        opt-out. `at`: when the change occurred, if not now (an event made elsewhere: its
        `occurred_at`, which a later event is compared with)."""
        order = changes.get("channel_order")
        await self._conn.execute(
            """
            INSERT INTO notifier.preferences
                (source, external_id, paused_until, cap_per_week, language, opted_in_at,
                 cap_per_month, channel_order, updated_at)
            VALUES ($1, $2, $4, $6, $8, $10, $12, $14, coalesce($15, now()))
            ON CONFLICT (source, external_id) DO UPDATE SET
                paused_until = CASE WHEN $3 THEN $4 ELSE notifier.preferences.paused_until END,
                cap_per_week = CASE WHEN $5 THEN $6 ELSE notifier.preferences.cap_per_week END,
                language = CASE WHEN $7 THEN $8 ELSE notifier.preferences.language END,
                opted_in_at = CASE WHEN $9 THEN $10 ELSE notifier.preferences.opted_in_at END,
                cap_per_month = CASE WHEN $11 THEN $12 ELSE notifier.preferences.cap_per_month END,
                channel_order = CASE WHEN $13 THEN $14 ELSE notifier.preferences.channel_order END,
                updated_at = EXCLUDED.updated_at
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
            "cap_per_month" in changes,
            changes.get("cap_per_month"),
            "channel_order" in changes,
            [ChannelType(kind).value for kind in order] if order else None,
            at,
        )
        if "opted_in" in changes:
            await self._conn.execute(
                "DELETE FROM notifier.opt_outs WHERE source = $1 AND external_id = $2",
                source,
                external_id,
            )

    async def save_interest_changes(
        self, source: str, external_id: str, changes: Sequence[InterestChange]
    ) -> None:
        """Replace the interest changes the page remembers for them (those still shown over
        the matcher's answer: `preferences_interests.recent`)."""
        await self._conn.execute(
            """
            INSERT INTO notifier.preferences (source, external_id, interest_changes)
            VALUES ($1, $2, $3::jsonb)
            ON CONFLICT (source, external_id) DO UPDATE SET
                interest_changes = EXCLUDED.interest_changes, updated_at = now()
            """,
            source,
            external_id,
            json.dumps([c.as_json() for c in changes]),
        )


def _order(value: list[str] | None) -> tuple[ChannelType, ...] | None:
    known = {kind.value for kind in ChannelType}
    return tuple(ChannelType(v) for v in value if v in known) if value else None


def _json(value: Any) -> list[dict[str, Any]]:
    """A jsonb list (asyncpg hands jsonb over as text)."""
    parsed = json.loads(value) if isinstance(value, str) else value
    return list(parsed or [])


def _moment(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None
