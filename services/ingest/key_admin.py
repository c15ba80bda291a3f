"""The API key administration routes (`/v1/keys`, scope `keys:admin`): what `roac keys` does,
for an operator's tooling that holds an admin key rather than database access. Thin: each route
validates, calls shared/api_keys.py, answers. Secrets are returned once, at creation, and are
stored only as digests."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from shared.api_key_store import KeyNameTaken, KeyRecord
from shared.api_keys import create_key, list_keys, revoke_key, rotate_key
from shared.authorization import requires
from shared.names import KEY_NAME_PATTERN, SOURCE_NAME
from shared.problems import AUTH_PROBLEMS, BODY_PROBLEMS, problem_responses
from shared.scopes import ANY_SOURCE, Scope
from shared.text_safety import SINGLE_LINE

keys_api = APIRouter(
    prefix="/v1/keys",
    tags=["api keys"],
    dependencies=[requires(Scope.KEYS_ADMIN)],
    responses=problem_responses(
        {
            **AUTH_PROBLEMS,
            **BODY_PROBLEMS,
            404: "No active key has this name",
            409: "The name already has two active keys",
        }
    ),
)
KeyNamePath = Annotated[str, Path(pattern=KEY_NAME_PATTERN, description="The key's name")]


def _check_source(value: str) -> str:
    # create_key checks the same, but its refusal is a 422 naming no field: checked here, the
    # problem document names `sources[i]`. Blank entries are dropped there, as they always were.
    source = value.strip()
    if source and source != ANY_SOURCE and not SOURCE_NAME.fullmatch(source):
        raise ValueError("a source is lowercase letters, digits, '_', '.', '-', up to 64; or '*'")
    return value


KeySource = Annotated[str, AfterValidator(_check_source), SINGLE_LINE]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=KEY_NAME_PATTERN)
    scopes: list[Scope] = Field(
        default_factory=lambda: [Scope.EVENTS_WRITE], min_length=1, max_length=len(Scope)
    )
    sources: list[KeySource] | None = Field(
        default=None,
        max_length=50,
        description="Sources whose people the key may write, erase or read; omitted: the key's "
        'name; `["*"]`: any source',
    )

    @field_validator("sources")
    @classmethod
    def _some_source(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not any(s.strip() for s in value):
            raise ValueError("a key bound to sources needs at least one")
        return value


class KeyOut(BaseModel):
    name: str
    scopes: list[str]
    sources: list[str] | None = Field(description="null: any source")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class CreatedKey(BaseModel):
    name: str
    secret: str = Field(description="Shown this once; roac keeps only its SHA-256 digest")


def _database_url(request: Request) -> str:
    url: str = request.app.state.database_url
    return url


def _out(record: KeyRecord) -> KeyOut:
    return KeyOut(
        name=record.name,
        scopes=list(record.scopes),
        sources=None if record.sources is None else list(record.sources),
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        revoked_at=record.revoked_at,
    )


@keys_api.get("", summary="Every API key (never a secret)")
async def keys_list(request: Request) -> dict[str, list[KeyOut]]:
    return {"keys": [_out(r) for r in await list_keys(_database_url(request))]}


@keys_api.post("", status_code=201, summary="Create an API key", response_model=CreatedKey)
async def keys_create(body: KeyIn, request: Request) -> CreatedKey:
    sources = body.sources if body.sources is not None else [body.name.lower()]
    try:
        secret = await create_key(
            _database_url(request),
            body.name,
            frozenset(body.scopes),
            None if ANY_SOURCE in sources else sources,
        )
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    except KeyNameTaken:
        raise HTTPException(409, f"{body.name!r} already has two active keys.") from None
    return CreatedKey(name=body.name, secret=secret)


@keys_api.post(
    "/{name}/rotate",
    status_code=201,
    summary="A second key with the same scopes and sources",
    response_model=CreatedKey,
)
async def keys_rotate(name: KeyNamePath, request: Request) -> CreatedKey:
    try:
        secret = await rotate_key(_database_url(request), name)
    except LookupError:
        raise HTTPException(404, f"No active key is named {name!r}.") from None
    except KeyNameTaken:
        raise HTTPException(409, f"{name!r} already has two active keys.") from None
    return CreatedKey(name=name, secret=secret)


@keys_api.delete("/{name}", summary="Revoke a name's active keys (or only the oldest)")
async def keys_revoke(
    name: KeyNamePath,
    request: Request,
    oldest: Annotated[bool, Query(description="Only the older of two active keys")] = False,
) -> dict[str, int]:
    revoked = await revoke_key(_database_url(request), name, oldest_only=oldest)
    if not revoked:
        raise HTTPException(404, f"No active key is named {name!r}.")
    return {"revoked": revoked}
