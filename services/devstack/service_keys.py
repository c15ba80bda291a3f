"""The development stack's keys for services that call another service's API: each service its
own key with only the scopes it uses, never the operator's key with every scope.

Why: `roac up` used to hand the operator key to the notifier and the console. The notifier only
reads a person's channels and interests back for their preferences page (`contacts:read`); the
console acts for operators but never manages keys. A development stack that copies the operator
key shows newcomers the wrong habit and lets a bug in the notifier erase people. Each start
revokes the previous start's key of the same name and creates a fresh one (a name holds at most
two active keys), so nothing piles up in `access.api_keys`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from shared import api_key_store
from shared.api_keys import digest, new_secret
from shared.scopes import ALL_SCOPES, Scope


@dataclass(frozen=True)
class ServiceKey:
    setting: str  # the environment variable the service reads it from
    name: str  # the key's name in access.api_keys, metrics and events
    scopes: frozenset[Scope]


SERVICE_KEYS = (
    ServiceKey(
        "ROAC_NOTIFIER_MATCHER_API_KEY",
        "dev-notifier-preferences",
        frozenset({Scope.CONTACTS_READ}),
    ),
    # The scopes docs/console.md lists: everything an operator does, but not keys:admin.
    ServiceKey("ROAC_CONSOLE_API_KEY", "dev-console", ALL_SCOPES - {Scope.KEYS_ADMIN}),
)


async def create_service_keys(database_url: str, env: Mapping[str, str]) -> dict[str, str]:
    """A fresh key (any source) for each service key whose setting `env` leaves empty, revoking
    that name's earlier keys; the settings to add to the services' environment."""
    missing = [key for key in SERVICE_KEYS if not env.get(key.setting)]
    if not missing:
        return {}
    created = {}
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            for key in missing:
                await api_key_store.revoke_key(conn, key.name)
                secret = new_secret()
                await api_key_store.insert_key(
                    conn, key.name, digest(secret), sorted(s.value for s in key.scopes), None
                )
                created[key.setting] = secret
    finally:
        await conn.close()
    return created
