"""The console audit list's people, on a real PostgreSQL: migration 0002 fills the list of rows
recorded before it from their text (the target person, a blocked pairing's other person, the
identities an undone merge set apart; nothing from rows naming nobody), and Accounts walks the
people named and forgets one in every row (target, detail, people), older rows found by their
text, while a person whose id merely starts with theirs stays named."""

from __future__ import annotations

import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from services.console.accounts import Accounts
from services.console.audit_people import ERASED
from shared.migrations import MigrationSource, apply_migrations, drop_database
from tests.support.infra import PG_BASE

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "console" / "migrations"
UUID = "0b8e5f7e-8f0e-4c1e-9d7a-2f6e3c1b2a10"
OLD_ROWS = [
    ("block pairing", "person crm/ada-1", f"never with person crm/bob/2; console-block-{UUID}"),
    (
        "unmerge",
        "person crm/ada-1",
        f"merge {UUID} undone: person crm/c, x, person forum/d apart again; console-unmerge-{UUID}",
    ),
    ("pause", "person crm/ada-10", "paused until 2027-01-04; console-pause-1"),
    ("save pool", "Mondays 09:00", ""),
    ("erase", ERASED, "console-erase-1"),
]


async def test_older_rows_get_their_people_and_a_person_is_forgotten_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{PG_BASE}roac_test_audit_{uuid.uuid4().hex[:8]}"
    # The console's schema as it was before 0002: its first migration alone.
    before = tmp_path / "console_before_people"
    before.mkdir()
    (before / "__init__.py").write_text("")
    shutil.copy(MIGRATIONS / "0001_console.sql", before / "0001_console.sql")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        await apply_migrations(url, [MigrationSource("console", "console_before_people")])
        conn = await asyncpg.connect(url)
        try:
            await conn.executemany(
                "INSERT INTO console.audit (operator, action, target, outcome, detail) "
                "VALUES ('ops@example.org', $1, $2, 'ok', $3)",
                OLD_ROWS,
            )
        finally:
            await conn.close()
        applied = await apply_migrations(
            url, [MigrationSource("console", "services.console.migrations")]
        )
        assert [(m.version, m.name) for m in applied] == [(2, "audit_people")]

        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            people = await pool.fetch("SELECT people FROM console.audit ORDER BY id")
            assert [list(r["people"]) for r in people] == [
                ["crm/ada-1", "crm/bob/2"],
                ["crm/ada-1", "crm/c, x", "forum/d"],
                ["crm/ada-10"],
                [],
                [],
            ]
            accounts = Accounts(pool, timedelta(hours=1))
            await accounts.record(
                "ops@example.org", "block pairing", "person crm/bob/2", "ok",
                "never with person crm/ada-1; console-block-2", ["crm/bob/2", "crm/ada-1"],
            )  # fmt: skip
            named = await accounts.audited_people(None, 100)
            assert named == sorted(["crm/ada-1", "crm/ada-10", "crm/bob/2", "crm/c, x", "forum/d"])
            # Walked in batches by a cursor.
            assert await accounts.audited_people(None, 2) == named[:2]
            assert await accounts.audited_people(named[1], 2) == named[2:4]

            assert await accounts.forget_person("crm/ada-1") == 3
            rows = await pool.fetch("SELECT target, detail, people FROM console.audit ORDER BY id")
            assert [(r["target"], r["detail"], list(r["people"])) for r in rows] == [
                (ERASED, OLD_ROWS[0][2], [ERASED, "crm/bob/2"]),
                (ERASED, OLD_ROWS[1][2], [ERASED, "crm/c, x", "forum/d"]),
                ("person crm/ada-10", OLD_ROWS[2][2], ["crm/ada-10"]),
                ("Mondays 09:00", "", []),
                (ERASED, "console-erase-1", []),
                (
                    "person crm/bob/2",
                    f"never with {ERASED}; console-block-2",
                    ["crm/bob/2", ERASED],
                ),
            ]
            assert "crm/ada-1" not in await accounts.audited_people(None, 100)
            assert await accounts.forget_person("crm/ada-1") == 0
        finally:
            await pool.close()
    finally:
        await drop_database(url)
