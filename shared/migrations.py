"""Versioned SQL migrations: create the database when it is missing, then apply what is new.

Each component (the shared messaging tables, each service's own schema) keeps its migrations as
`NNNN_description.sql` files in a package. Applied versions are recorded with a checksum in
`public.roac_schema_migrations`; an advisory lock makes concurrent runs wait for each other, so
running `roac migrate` twice, or from several processes at once, is harmless.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import unquote, urlsplit

import asyncpg

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x726F6163  # "roac"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationSource:
    """A component's migrations: the package holding its `NNNN_*.sql` files."""

    component: str
    package: str

    def load(self) -> list[Migration]:
        found = []
        for entry in resources.files(self.package).iterdir():
            match = _FILE.match(entry.name)
            if match:
                found.append(
                    Migration(self.component, int(match[1]), match[2], entry.read_text("utf-8"))
                )
        found.sort(key=lambda m: m.version)
        versions = [m.version for m in found]
        if len(set(versions)) != len(versions):
            raise MigrationError(f"{self.component}: two migrations share a version number")
        return found


def database_name(url: str) -> str:
    name = unquote(urlsplit(url).path.lstrip("/"))
    if not name:
        raise MigrationError(f"the database URL names no database: {urlsplit(url).path!r}")
    return name


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(url: str) -> bool:
    """Create the database named in `url` if missing; True when it was created."""
    name = database_name(url)
    conn = await asyncpg.connect(url, database="postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            # CREATE DATABASE takes no parameters: the name is quoted as an identifier.
            await conn.execute(f"CREATE DATABASE {_quote_identifier(name)}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    name = database_name(url)
    conn = await asyncpg.connect(url, database="postgres")
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_identifier(name)} WITH (FORCE)")
    finally:
        await conn.close()


async def apply_migrations(url: str, sources: list[MigrationSource]) -> list[Migration]:
    """Apply every migration not yet recorded, in order; return those applied now."""
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    applied_now: list[Migration] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS public.roac_schema_migrations (
                component  text        NOT NULL,
                version    integer     NOT NULL,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (component, version)
            )
            """
        )
        rows = await conn.fetch(
            "SELECT component, version, checksum FROM public.roac_schema_migrations"
        )
        recorded = {(r["component"], r["version"]): r["checksum"] for r in rows}
        for source in sources:
            for migration in source.load():
                key = (migration.component, migration.version)
                if key in recorded:
                    if recorded[key] != migration.checksum:
                        raise MigrationError(
                            f"{migration.component} migration "
                            f"{migration.version:04d}_{migration.name} "
                            "was changed after it was applied; add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO public.roac_schema_migrations "
                        "(component, version, name, checksum) "
                        "VALUES ($1, $2, $3, $4)",
                        migration.component,
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied_now.append(migration)
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        finally:
            await conn.close()
    return applied_now
