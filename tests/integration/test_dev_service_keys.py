"""`roac up`'s keys for the console and the notifier, in the real PostgreSQL: each with only its
own scopes, a fresh one each start with the previous start's revoked, and none made for a
setting the developer gave (services/devstack/service_keys.py)."""

from __future__ import annotations

import asyncpg

from services.devstack.service_keys import create_service_keys
from shared import api_key_store as store
from shared.api_keys import ApiKeyring
from shared.scopes import ALL_SCOPES, Scope
from shared.settings import Settings


async def _active(pool: asyncpg.Pool, name: str) -> list[store.ActiveKey]:
    async with pool.acquire() as conn:
        return [key for key in await store.active_keys(conn) if key.name == name]


async def test_each_start_gives_the_services_fresh_keys_with_their_own_scopes(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    first = await create_service_keys(settings.database_url, {})
    second = await create_service_keys(settings.database_url, {})
    assert set(second) == {"ROAC_NOTIFIER_MATCHER_API_KEY", "ROAC_CONSOLE_API_KEY"}
    assert not set(first.values()) & set(second.values())

    keyring = ApiKeyring({})
    async with pool.acquire() as conn:
        keyring.load(await store.active_keys(conn))
    # The previous start's keys no longer work; the new ones carry only their scopes.
    assert all(keyring.authenticate(secret) is None for secret in first.values())
    notifier = keyring.authenticate(second["ROAC_NOTIFIER_MATCHER_API_KEY"])
    console = keyring.authenticate(second["ROAC_CONSOLE_API_KEY"])
    assert notifier is not None and console is not None
    assert notifier.scopes == frozenset({Scope.CONTACTS_READ})
    assert console.scopes == ALL_SCOPES - {Scope.KEYS_ADMIN}
    assert len(await _active(pool, "dev-console")) == 1
    assert len(await _active(pool, "dev-notifier-preferences")) == 1


async def test_a_key_the_developer_set_is_left_alone(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    await create_service_keys(settings.database_url, {})
    before = await _active(pool, "dev-console")
    made = await create_service_keys(
        settings.database_url, {"ROAC_CONSOLE_API_KEY": "set-by-the-developer"}
    )
    assert set(made) == {"ROAC_NOTIFIER_MATCHER_API_KEY"}
    assert await _active(pool, "dev-console") == before
