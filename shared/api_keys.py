"""API keys: kept only as SHA-256 digests, looked up by digest, required on every /v1/ path.

Keys come from two places, valid side by side: `ROAC_API_KEYS` (fixed for the process; dev and
tests) and the database (`roac keys create|list|revoke`, table `access.api_keys`). A service
never queries the database per request: its keyring holds the active digests in memory and
reloads them when `roac keys` announces a change (LISTEN/NOTIFY, typically within milliseconds)
and every `ROAC_API_KEYS_REFRESH_SECONDS` (5 s) anyway, which bounds how long a revoked key keeps
working if a notification is lost. While the database is unreachable the last loaded keys stay.

Why a dict lookup by digest is safe against timing attacks: the table is keyed by SHA-256 of the
secret, so the only thing a lookup's timing could depend on is how the presented secret's digest
relates to stored digests. The caller cannot choose digests (that needs SHA-256 preimages), and
learning a stored digest's bytes would not reveal its secret (256 random bits from
`secrets.token_urlsafe(32)`, or 16+ characters for ROAC_API_KEYS). Python's dict also compares
a keyed, per-process hash before any bytes. So a lookup leaks nothing a comparison of every
digest with `hmac.compare_digest` would hide, and it costs O(1) however many keys there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import api_key_store as store
from shared.api_key_store import ActiveKey, KeyRecord
from shared.body_limit import drain
from shared.metrics import API_KEY_REQUESTS, API_KEYS_LOADED
from shared.names import KEY_NAME, SOURCE_NAME
from shared.problems import problem_response
from shared.scopes import DEFAULT_SCOPES, Grant
from shared.scopes import Scope as KeyScope

_SCOPE_NAMES = frozenset(s.value for s in KeyScope)

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger("roac.api_keys")

# How long a starting service waits for its first load before it serves with what it has.
FIRST_LOAD_TIMEOUT_SECONDS = 5.0
_RELOAD_TIMEOUT_SECONDS = 10.0
# The keyring's connection, as pg_stat_activity shows it.
APPLICATION_NAME = "roac-api-keys"


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def check_key_name(name: str) -> str:
    if not KEY_NAME.fullmatch(name):
        raise ValueError(
            "an API key name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit"
        )
    return name


@dataclass(frozen=True)
class _Key:
    grant: Grant
    key_id: int | None  # None: from ROAC_API_KEYS


class ApiKeyring:
    """The keys a service accepts: `keys` (`{name: secret}`, from ROAC_API_KEYS), plus the
    database's active keys when a database URL is given. The middleware starts and stops the
    refresh with the app's lifespan."""

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        database_url: str | None = None,
        refresh_seconds: float = 5.0,
    ) -> None:
        # ROAC_API_KEYS: the operator's own keys, every scope on every source.
        self._static = {
            digest(secret): _Key(Grant.everything(name), None) for name, secret in keys.items()
        }
        self._by_digest = dict(self._static)
        self._by_name = _newest_by_name(self._by_digest.values())
        self._used: dict[int, float] = {}
        # Without a database there is nothing more to load.
        self.loaded = database_url is None
        self._refresher = (
            _Refresher(self, database_url, refresh_seconds) if database_url is not None else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeyring:
        """ROAC_API_KEYS and the database's keys, as every service with /v1/ routes uses them."""
        return cls(
            settings.api_key_secrets,
            database_url=settings.database_url,
            refresh_seconds=settings.api_keys_refresh_seconds,
        )

    def authenticate(self, presented: str) -> Grant | None:
        """What the key may do (its name, scopes and sources), or None."""
        key = self._by_digest.get(digest(presented))
        if key is None:
            return None
        if key.key_id is not None:
            # Flushed to last_used_at by the next reload: no database write per request.
            self._used[key.key_id] = time.time()
        return key.grant

    def load(self, active: Iterable[ActiveKey]) -> None:
        """Replace the database's keys (ROAC_API_KEYS stay). One assignment: a request sees the
        old set or the new one, never half of each."""
        by_digest = {key.digest: _Key(_grant(key), key.key_id) for key in active}
        by_digest.update(self._static)
        self._by_digest = by_digest
        self._by_name = _newest_by_name(by_digest.values())
        self.loaded = True

    def grant_named(self, name: str) -> Grant | None:
        """What the key named `name` may do (its newest key's grant), or None: how the AMQP
        ingress binds a RabbitMQ user to the sources of the API key of the same name."""
        return self._by_name.get(name)

    @property
    def size(self) -> int:
        return len(self._by_digest)

    def take_used(self) -> dict[int, datetime]:
        """Database keys used since the last call, with their latest use."""
        used, self._used = self._used, {}
        return {key_id: datetime.fromtimestamp(t, UTC) for key_id, t in used.items()}

    def give_back_used(self, used: Mapping[int, datetime]) -> None:
        """Uses that could not be recorded: keep them for the next attempt."""
        for key_id, when in used.items():
            self._used[key_id] = max(self._used.get(key_id, 0.0), when.timestamp())

    async def start(self) -> None:
        if self._refresher is not None:
            await self._refresher.start()

    async def stop(self) -> None:
        if self._refresher is not None:
            await self._refresher.stop()


class _Refresher:
    """Keeps a keyring's database keys current over one connection of its own (LISTEN needs a
    dedicated connection; the services' pools hold none such)."""

    def __init__(self, keyring: ApiKeyring, database_url: str, interval: float) -> None:
        self._keyring = keyring
        self._url = database_url
        self._interval = interval
        self._wakeup = asyncio.Event()
        self._first_load = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="api-key-refresh")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_LOAD_TIMEOUT_SECONDS):
                await self._first_load.wait()
        if not self._keyring.loaded:
            log.warning(
                "API keys from the database not loaded yet: until they are, only ROAC_API_KEYS "
                "work and other keys get 503"
            )
        elif not self._keyring.size:
            log.warning("no API keys: every /v1/ request gets 401 until `roac keys create NAME`")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self._wakeup.set()

    async def _run(self) -> None:
        listener = _Listener(self._url, self._on_notify)
        backoff = 0.5
        try:
            while True:
                try:
                    conn = await listener.connection()
                    self._wakeup.clear()  # before reading: a change during the read wakes us
                    async with asyncio.timeout(_RELOAD_TIMEOUT_SECONDS):
                        await self._reload(conn)
                    self._first_load.set()
                    backoff = 0.5
                    # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a
                    # cancellation that arrives as the wake-up does, and stop() would hang.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._interval):
                            await self._wakeup.wait()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - keep the last keys through outages
                    log.warning("reloading API keys failed, retrying in %.1fs: %r", backoff, exc)
                    await listener.drop()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._interval)
        finally:
            await listener.drop()

    async def _reload(self, conn: asyncpg.Connection) -> None:
        used = self._keyring.take_used()
        try:
            await store.record_use(conn, used)
            active = await store.active_keys(conn)
        except BaseException:
            self._keyring.give_back_used(used)
            raise
        self._keyring.load(active)
        API_KEYS_LOADED.set_to_current_time()


class _Listener:
    """A connection LISTENing to key changes, opened again after it was dropped. On (re)connect
    the caller reloads, so a change announced while it was gone is not missed."""

    def __init__(self, url: str, on_notify: Callable[[object, int, str, str], None]) -> None:
        self._url = url
        self._on_notify = on_notify
        self._conn: asyncpg.Connection | None = None

    async def connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncpg.connect(
                self._url, timeout=5, server_settings={"application_name": APPLICATION_NAME}
            )
            await conn.add_listener(store.NOTIFY_CHANNEL, self._on_notify)
            self._conn = conn
        return self._conn

    async def drop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close(timeout=1)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()


# What a refused request's body may cost before the answer: enough for any ordinary request.
REFUSED_DRAIN_BYTES = 1024 * 1024
REFUSED_DRAIN_SECONDS = 2.0


def _has_body(scope: Scope) -> bool:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            return bytes(value) not in (b"0", b"")
        if key == b"transfer-encoding":
            return True
    return False


def bearer_token(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
    return None


class ApiKeyMiddleware:
    """Answers 401 before the body is read, so an unauthenticated caller costs nothing more.
    Starts the keyring's refresh once the app started, and stops it when the app stopped."""

    def __init__(self, app: ASGIApp, keyring: ApiKeyring, protected_prefix: str = "/v1/") -> None:
        self._app = app
        self._keyring = keyring
        self._prefix = protected_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, self._with_keyring(send))
            return
        if scope["type"] != "http" or not scope["path"].startswith(self._prefix):
            await self._app(scope, receive, send)
            return
        token = bearer_token(scope)
        grant = self._keyring.authenticate(token) if token else None
        if grant is None:
            if token and not self._keyring.loaded:
                # The key may well be valid: the database's keys are not loaded yet.
                response = problem_response(
                    503,
                    "Unavailable",
                    "API keys are not loaded yet; retry in a moment.",
                    headers={"Retry-After": "1"},
                )
            else:
                response = problem_response(
                    401,
                    "Unauthorized",
                    "Send a valid API key as 'Authorization: Bearer <key>'.",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            # A small body is read and discarded first, so that clients that write the whole
            # body before reading the answer see the 401 rather than a connection reset; an
            # unauthenticated caller never gets more than that read.
            if _has_body(scope):
                await drain(receive, max_bytes=REFUSED_DRAIN_BYTES, seconds=REFUSED_DRAIN_SECONDS)
            await response(scope, receive, send)
            return
        API_KEY_REQUESTS.labels(grant.name).inc()
        state = scope.setdefault("state", {})
        state["integration"] = grant.name
        state["grant"] = grant
        await self._app(scope, receive, send)

    def _with_keyring(self, send: Send) -> Send:
        # Hooked on the app's answers: keys load after the app's own start-up (the database is
        # known to answer by then) and before the server reports ready.
        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                await self._keyring.start()
            elif message["type"] == "lifespan.shutdown.complete":
                await self._keyring.stop()
            await send(message)

        return sending


async def create_key(
    database_url: str,
    name: str,
    scopes: Iterable[KeyScope] = DEFAULT_SCOPES,
    sources: Iterable[str] | None = None,
) -> str:
    """Create an active key named `name` with these scopes and sources (None: any) and return
    its secret, which is stored nowhere."""
    check_key_name(name)
    scopes = frozenset(scopes)
    if not scopes:
        raise ValueError("a key needs at least one scope")
    secret = new_secret()
    async with _connection(database_url) as conn:
        await store.insert_key(
            conn, name, digest(secret), [s.value for s in scopes], _source_list(sources)
        )
    return secret


async def rotate_key(database_url: str, name: str) -> str:
    """A second active key for `name` with the same scopes and sources as its current one;
    revoke the old one (`revoke_key(..., oldest_only=True)`) once the integration uses it."""
    async with _connection(database_url) as conn:
        active = [k for k in await store.all_keys(conn) if k.name == name and not k.revoked_at]
        if not active:
            raise LookupError(name)
        current = active[-1]
        secret = new_secret()
        await store.insert_key(conn, name, digest(secret), current.scopes, current.sources)
    return secret


def _source_list(sources: Iterable[str] | None) -> list[str] | None:
    if sources is None:
        return None
    checked = sorted({s.strip() for s in sources if s.strip()})
    if not checked:
        raise ValueError("a key bound to sources needs at least one")
    for source in checked:
        if not SOURCE_NAME.fullmatch(source):
            raise ValueError(
                f"source {source!r}: lowercase letters, digits, '_', '.', '-', up to 64"
            )
    return checked


def _newest_by_name(keys: Iterable[_Key]) -> dict[str, Grant]:
    # ROAC_API_KEYS first, then database keys by id: a later (newer) key of a name wins.
    ordered = sorted(keys, key=lambda k: -1 if k.key_id is None else k.key_id)
    return {key.grant.name: key.grant for key in ordered}


def _grant(key: ActiveKey) -> Grant:
    # A scope this version does not know (written by a newer one) grants nothing here.
    scopes = frozenset(KeyScope(s) for s in key.scopes if s in _SCOPE_NAMES)
    sources = None if key.sources is None else frozenset(key.sources)
    return Grant(key.name, scopes, sources)


async def list_keys(database_url: str) -> list[KeyRecord]:
    async with _connection(database_url) as conn:
        return await store.all_keys(conn)


async def revoke_key(database_url: str, name: str, *, oldest_only: bool = False) -> int:
    """Revoke the name's active keys (or its oldest only); how many were revoked."""
    async with _connection(database_url) as conn:
        return await store.revoke_key(conn, name, oldest_only=oldest_only)


@contextlib.asynccontextmanager
async def _connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()
