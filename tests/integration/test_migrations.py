import uuid

import asyncpg
import pytest

from services.database import MIGRATION_SOURCES
from shared.migrations import MigrationError, MigrationSource, apply_migrations, drop_database
from tests.support.infra import PG_BASE


async def test_migrate_creates_the_database_and_is_harmless_twice() -> None:
    url = f"{PG_BASE}roac_test_mig_{uuid.uuid4().hex[:8]}"
    try:
        first = await apply_migrations(url, MIGRATION_SOURCES)
        second = await apply_migrations(url, MIGRATION_SOURCES)
        assert {m.component for m in first} == {
            "messaging",
            "matcher",
            "notifier",
            "ingest",
            "console",
        }
        assert second == []
        conn = await asyncpg.connect(url)
        try:
            tables = {
                r["t"]
                for r in await conn.fetch(
                    "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables "
                    "WHERE table_schema IN ('messaging', 'matcher', 'notifier')"
                )
            }
        finally:
            await conn.close()
        assert {
            "messaging.inbox",
            "messaging.outbox",
            "matcher.interests",
            "notifier.deliveries",
        } <= tables
    finally:
        await drop_database(url)


async def test_an_edited_applied_migration_is_refused(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    url = f"{PG_BASE}roac_test_mig_{uuid.uuid4().hex[:8]}"
    package = tmp_path / "edited_migrations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "0001_first.sql").write_text("CREATE TABLE edited_check (id int);")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = MigrationSource("edited", "edited_migrations")
    try:
        assert len(await apply_migrations(url, [source])) == 1
        (package / "0001_first.sql").write_text("CREATE TABLE edited_check (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(url, [source])
    finally:
        await drop_database(url)
