"""API keys in the real PostgreSQL: `roac keys create|list|revoke`, and a service's keyring
seeing new and revoked keys (through NOTIFY at once, through the periodic reload otherwise)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from typer.testing import CliRunner

from services.cli import app as cli
from shared import api_key_store as store
from shared.api_key_store import KeyNameTaken
from shared.api_keys import (
    APPLICATION_NAME,
    ApiKeyring,
    create_key,
    digest,
    list_keys,
    revoke_key,
    rotate_key,
)
from shared.scopes import Grant, Scope
from shared.settings import Settings
from tests.support.infra import Infra


def _name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def _eventually(check: Callable[[], bool], within: float) -> float:
    """Seconds until `check` held; fails after `within`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            pytest.fail(f"not true within {within}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_create_list_revoke(settings: Settings, pool: asyncpg.Pool) -> None:
    name = _name("crm")
    secret = await create_key(settings.database_url, name)
    stored = await pool.fetchrow(
        "SELECT digest, revoked_at FROM access.api_keys WHERE name = $1", name
    )
    assert bytes(stored["digest"]) == digest(secret)  # the digest only, never the secret
    assert stored["revoked_at"] is None
    second = await create_key(settings.database_url, name)  # two active keys: a rotation
    with pytest.raises(KeyNameTaken):
        await create_key(settings.database_url, name)  # never a third

    assert await revoke_key(settings.database_url, name, oldest_only=True) == 1
    records = [r for r in await list_keys(settings.database_url) if r.name == name]
    assert [r.revoked_at is not None for r in records] == [True, False]
    active = await pool.fetchval(
        "SELECT digest FROM access.api_keys WHERE name = $1 AND revoked_at IS NULL", name
    )
    assert bytes(active) == digest(second)  # the newer one stays
    assert await revoke_key(settings.database_url, name) == 1
    assert not await revoke_key(settings.database_url, name)  # nothing active left
    await create_key(settings.database_url, name)  # the name is free again
    records = [r for r in await list_keys(settings.database_url) if r.name == name]
    assert [r.revoked_at is not None for r in records] == [True, True, False]


async def test_keys_keep_their_scopes_and_sources_and_rotate_with_them(
    settings: Settings,
) -> None:
    name = _name("scoped")
    await create_key(
        settings.database_url, name, {Scope.EVENTS_WRITE, Scope.CONTACTS_ERASE}, ["forms", "crm"]
    )
    rotated = await rotate_key(settings.database_url, name)
    ring = ApiKeyring({}, database_url=settings.database_url, refresh_seconds=0.5)
    await ring.start()
    try:
        grant = ring.authenticate(rotated)
        assert grant == Grant(
            name, frozenset({Scope.EVENTS_WRITE, Scope.CONTACTS_ERASE}), frozenset({"crm", "forms"})
        )
    finally:
        await ring.stop()
    with pytest.raises(ValueError, match="source"):
        await create_key(settings.database_url, _name("bad"), sources=["Not A Source"])
    with pytest.raises(LookupError):
        await rotate_key(settings.database_url, _name("nobody"))


async def test_refused_names_never_reach_the_database(settings: Settings) -> None:
    with pytest.raises(ValueError, match="API key name"):
        await create_key(settings.database_url, "no spaces please")


async def test_a_keyring_sees_new_and_revoked_keys_at_once(settings: Settings) -> None:
    # A refresh interval far longer than the test: only NOTIFY can explain what it sees.
    ring = ApiKeyring({}, database_url=settings.database_url, refresh_seconds=60)
    await ring.start()
    try:
        assert ring.loaded
        name = _name("forms")
        secret = await create_key(settings.database_url, name)
        await _eventually(lambda: ring.authenticate(secret) == _grant(name), within=2)
        await revoke_key(settings.database_url, name)
        await _eventually(lambda: ring.authenticate(secret) is None, within=2)
    finally:
        await ring.stop()


async def test_a_change_nobody_announced_is_seen_at_the_next_reload(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    ring = ApiKeyring({}, database_url=settings.database_url, refresh_seconds=0.5)
    await ring.start()
    try:
        name, secret = _name("silent"), "silent-secret-0123456789"
        # Written without pg_notify, as if the notification had been lost.
        await pool.execute(
            "INSERT INTO access.api_keys (name, digest, scopes, slot) "
            "VALUES ($1, $2, '{events:write}', 1)",
            name,
            digest(secret),
        )
        silent = Grant(name, frozenset({Scope.EVENTS_WRITE}), None)  # sources NULL: any
        assert await _eventually(lambda: ring.authenticate(secret) == silent, within=3) < 2
    finally:
        await ring.stop()


async def test_uses_are_recorded_by_the_next_reload(settings: Settings, pool: asyncpg.Pool) -> None:
    name = _name("used")
    secret = await create_key(settings.database_url, name)
    ring = ApiKeyring({}, database_url=settings.database_url, refresh_seconds=0.2)
    await ring.start()
    try:
        assert ring.authenticate(secret) == _grant(name)

        async def last_used() -> object:
            return await pool.fetchval(
                "SELECT last_used_at FROM access.api_keys WHERE name = $1", name
            )

        deadline = time.monotonic() + 3
        while await last_used() is None:
            assert time.monotonic() < deadline, "last_used_at was never written"
            await asyncio.sleep(0.05)
    finally:
        await ring.stop()


async def test_a_keyring_keeps_its_keys_while_the_database_is_gone(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    name = _name("outage")
    secret = await create_key(settings.database_url, name)
    ring = ApiKeyring({}, database_url=settings.database_url, refresh_seconds=0.2)
    await ring.start()
    try:
        assert ring.authenticate(secret) == _grant(name)
        # Cut the keyring's own connection (the closest to an outage this test may cause).
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = $1",
            APPLICATION_NAME,
        )
        assert ring.authenticate(secret) == _grant(name)
        await revoke_key(settings.database_url, name)  # seen once it reconnected
        await _eventually(lambda: ring.authenticate(secret) is None, within=5)
    finally:
        await ring.stop()


def test_the_cli_creates_lists_and_revokes(infra: Infra) -> None:
    runner = CliRunner()
    env = infra.env()
    name = _name("cli")

    created = runner.invoke(cli, ["keys", "create", name], env=env)
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert len(secret) >= 43 and "\n" not in secret
    assert "not shown again" in created.stderr

    listed = runner.invoke(cli, ["keys", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    (line,) = [ln for ln in listed.stdout.splitlines() if ln.startswith(name)]
    assert line.split()[-1] == "-"  # not revoked
    assert secret not in listed.output

    assert "events:write" in line and f" {name} " in line  # the default scope and source
    again = runner.invoke(cli, ["keys", "create", name, "--scope", "rounds:read"], env=env)
    assert again.exit_code == 0, again.output  # a second key: rotation
    third = runner.invoke(cli, ["keys", "create", name], env=env)
    assert third.exit_code == 1
    assert "two active keys" in third.stderr
    unknown_scope = runner.invoke(cli, ["keys", "create", _name("x"), "--scope", "all"], env=env)
    assert unknown_scope.exit_code == 2 and "unknown scope" in unknown_scope.stderr

    revoked = runner.invoke(cli, ["keys", "revoke", name], env=env)
    assert revoked.exit_code == 0, revoked.output
    unknown = runner.invoke(cli, ["keys", "revoke", name], env=env)
    assert unknown.exit_code == 1
    listed = runner.invoke(cli, ["keys", "list"], env=env)
    lines = [ln for ln in listed.stdout.splitlines() if ln.startswith(name)]
    assert len(lines) == 2 and all(ln.split()[-1] != "-" for ln in lines)

    bad = runner.invoke(cli, ["keys", "create", "bad name"], env=env)
    assert bad.exit_code == 2


def _grant(name: str) -> Grant:
    """What `create_key` grants by default: writing events, for any source (the CLI binds a
    key to its own name as source unless told otherwise)."""
    return Grant(name, frozenset({Scope.EVENTS_WRITE}), None)


async def test_store_reports_active_keys_only(pool: asyncpg.Pool) -> None:
    name = _name("store")
    async with pool.acquire() as conn:
        await store.insert_key(
            conn, name, digest("store-secret-0123456789"), ["events:write"], None
        )
        assert name in {k.name for k in await store.active_keys(conn)}
        assert await store.revoke_key(conn, name)
        assert name not in {k.name for k in await store.active_keys(conn)}
