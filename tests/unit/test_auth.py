from datetime import UTC, datetime

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from shared.api_key_store import ActiveKey
from shared.api_keys import (
    ApiKeyMiddleware,
    ApiKeyring,
    bearer_token,
    check_key_name,
    digest,
    new_secret,
)
from shared.authorization import Forbidden, check_sources, forbidden_problem, requires
from shared.scopes import Grant, Scope, parse_scopes, sources_from_cli
from shared.settings import Settings

DB_SECRET = "db-secret-0123456789abcdef"


def test_keys_authenticate_by_name() -> None:
    ring = ApiKeyring({"crm": "crm-secret-0123456789", "forms": "forms-secret-0123456789"})
    assert ring.authenticate("crm-secret-0123456789").name == "crm"  # type: ignore[union-attr]
    assert ring.authenticate("forms-secret-0123456789").name == "forms"  # type: ignore[union-attr]
    assert ring.authenticate("crm-secret-012345678") is None
    assert ring.authenticate("") is None


def test_only_digests_are_kept() -> None:
    ring = ApiKeyring({"crm": "crm-secret-0123456789"})
    ring.load([ActiveKey(1, "forms", digest(DB_SECRET), ("events:write",), ("forms",))])
    assert "crm-secret" not in repr(vars(ring))
    assert DB_SECRET not in repr(vars(ring))


def test_database_keys_are_replaced_on_each_load_and_environment_keys_stay() -> None:
    ring = ApiKeyring({"env": "env-secret-0123456789"}, database_url="postgresql://unused/x")
    assert not ring.loaded
    ring.load([ActiveKey(7, "forms", digest(DB_SECRET), ("events:write",), ("forms",))])
    assert ring.loaded
    assert ring.authenticate(DB_SECRET).name == "forms"
    ring.load([])  # revoked
    assert ring.authenticate(DB_SECRET) is None
    assert ring.authenticate("env-secret-0123456789").name == "env"


def test_uses_of_database_keys_are_collected_for_the_next_reload() -> None:
    ring = ApiKeyring({"env": "env-secret-0123456789"})
    ring.load([ActiveKey(7, "forms", digest(DB_SECRET), ("events:write",), ("forms",))])
    ring.authenticate("env-secret-0123456789")  # no row to record it in
    assert ring.take_used() == {}
    ring.authenticate(DB_SECRET)
    used = ring.take_used()
    assert list(used) == [7]
    assert ring.take_used() == {}  # taken
    ring.give_back_used(used)  # the write failed: kept for the next attempt
    assert ring.take_used() == used


def test_from_settings_reads_the_environment_keys_and_the_database() -> None:
    strong = new_secret()
    settings = Settings(api_keys=f"crm:{strong}", api_keys_refresh_seconds=2)
    ring = ApiKeyring.from_settings(settings)
    assert ring.authenticate(strong) == Grant.everything("crm")
    assert not ring.loaded  # until the database's keys are loaded


def test_secrets_are_long_and_random() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert len(first) >= 43  # 32 random bytes, URL-safe base64


@pytest.mark.parametrize("name", ["crm", "community-platform", "forms_2", "a.b"])
def test_key_names_that_are_accepted(name: str) -> None:
    assert check_key_name(name) == name


@pytest.mark.parametrize("name", ["", "-crm", "has space", "x" * 65, "crm\n", "émile"])
def test_key_names_that_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="API key name"):
        check_key_name(name)


def test_bearer_token_parsing() -> None:
    def scope(value: bytes) -> dict[str, object]:
        return {"headers": [(b"authorization", value)]}

    assert bearer_token(scope(b"Bearer abc")) == "abc"
    assert bearer_token(scope(b"bearer   abc  ")) == "abc"
    assert bearer_token(scope(b"Basic abc")) is None
    assert bearer_token(scope(b"Bearer ")) is None
    assert bearer_token({"headers": []}) is None


class RecordingKeyring(ApiKeyring):
    """Records when the middleware starts and stops it, and loads nothing."""

    def __init__(self) -> None:
        super().__init__({"env": "env-secret-0123456789"}, database_url="postgresql://unused/x")
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")


def _app(ring: ApiKeyring) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/whoami")
    async def whoami() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(ApiKeyMiddleware, keyring=ring)
    return app


def test_the_middleware_runs_the_keyring_with_the_app() -> None:
    ring = RecordingKeyring()
    with TestClient(_app(ring)):
        assert ring.calls == ["start"]
    assert ring.calls == ["start", "stop"]


def test_an_unknown_key_is_503_until_the_database_keys_are_loaded() -> None:
    ring = RecordingKeyring()
    with TestClient(_app(ring)) as client:
        unknown = {"Authorization": "Bearer not-a-key-0123456789"}
        waiting = client.get("/v1/whoami", headers=unknown)
        assert waiting.status_code == 503
        assert waiting.headers["retry-after"] == "1"
        # An environment key works meanwhile; no key at all is 401 either way.
        env = {"Authorization": "Bearer env-secret-0123456789"}
        assert client.get("/v1/whoami", headers=env).status_code == 200
        assert client.get("/v1/whoami").status_code == 401
        ring.load([ActiveKey(1, "forms", digest(DB_SECRET), ("events:write",), ("forms",))])
        assert client.get("/v1/whoami", headers=unknown).status_code == 401
        db = {"Authorization": f"Bearer {DB_SECRET}"}
        assert client.get("/v1/whoami", headers=db).status_code == 200


def test_last_use_is_a_moment_in_utc() -> None:
    ring = ApiKeyring({})
    ring.load([ActiveKey(3, "forms", digest(DB_SECRET), ("events:write",), ("forms",))])
    before = datetime.now(UTC)
    ring.authenticate(DB_SECRET)
    (when,) = ring.take_used().values()
    assert when.tzinfo is not None
    assert (when - before).total_seconds() < 5


def test_database_keys_carry_their_scopes_and_sources() -> None:
    ring = ApiKeyring({})
    ring.load(
        [
            ActiveKey(1, "crm", digest(DB_SECRET), ("events:write", "future:scope"), ("crm",)),
            ActiveKey(2, "ops", digest("ops-" + DB_SECRET), ("rounds:write",), None),
        ]
    )
    crm = ring.authenticate(DB_SECRET)
    assert crm == Grant("crm", frozenset({Scope.EVENTS_WRITE}), frozenset({"crm"}))
    ops = ring.authenticate("ops-" + DB_SECRET)
    assert ops is not None and ops.sources is None and ops.allows(Scope.ROUNDS_WRITE)


def _scoped_app(ring: ApiKeyring) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/rounds", dependencies=[requires(Scope.ROUNDS_WRITE)])
    async def rounds() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/v1/people/{source}", dependencies=[requires(Scope.EVENTS_WRITE)])
    async def people(source: str, request: Request) -> dict[str, str]:
        check_sources(request, Scope.EVENTS_WRITE, [source])
        return {"ok": "yes"}

    app.add_exception_handler(Forbidden, forbidden_problem)
    app.add_middleware(ApiKeyMiddleware, keyring=ring)
    return app


def test_a_missing_scope_or_a_foreign_source_is_a_403_problem_naming_it() -> None:
    ring = ApiKeyring({})
    ring.load([ActiveKey(1, "crm", digest(DB_SECRET), ("events:write",), ("crm",))])
    headers = {"Authorization": f"Bearer {DB_SECRET}"}
    with TestClient(_scoped_app(ring)) as client:
        assert client.post("/v1/people/crm", headers=headers).status_code == 200
        foreign = client.post("/v1/people/forum", headers=headers)
        assert foreign.status_code == 403
        assert foreign.headers["content-type"] == "application/problem+json"
        assert "forum" in foreign.json()["detail"]
        no_scope = client.post("/v1/rounds", headers=headers)
        assert no_scope.status_code == 403
        assert no_scope.json()["type"].endswith("/forbidden")
        assert "'rounds:write'" in no_scope.json()["detail"]
        assert client.post("/v1/rounds").status_code == 401


@pytest.mark.parametrize(
    ("names", "expected"),
    [(["events:write"], {Scope.EVENTS_WRITE}), (["keys:admin", " "], {Scope.KEYS_ADMIN})],
)
def test_scope_names_parse(names: list[str], expected: set[Scope]) -> None:
    assert parse_scopes(names) == expected


def test_unknown_scopes_are_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(ValueError, match=r"unknown scope\(s\) events:rite; known scopes: events"):
        parse_scopes(["events:rite"])


def test_cli_sources_default_to_the_key_name_and_star_means_any() -> None:
    assert sources_from_cli([], default="crm") == frozenset({"crm"})
    assert sources_from_cli(["crm", "forms"], default="x") == frozenset({"crm", "forms"})
    assert sources_from_cli(["*"], default="crm") is None
