"""The operators' read-only lists over HTTP (the console): rounds newest first, how many people a
selector takes in, people found by name, email, id, tag or topic, and what roac holds about one
person. Each is paged by keyset and bounded; thin routes over `Directory` (directory.py);
mounted under /v1 by routes.py."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from services.matcher.contact_routes import IdentityOut, identities_out
from services.matcher.contacts_admin import ContactIdentities
from services.matcher.directory import Directory
from services.matcher.pool_routes import PoolName, Selector
from shared.authorization import check_sources, grant_of, requires
from shared.person_path import ExternalIdPath, SourcePath
from shared.scopes import Scope
from shared.text_safety import SINGLE_LINE

router = APIRouter()


def _directory(request: Request) -> Directory:
    directory: Directory = request.app.state.directory
    return directory


class RoundSummary(BaseModel):
    id: UUID
    pool: str
    status: str
    dry_run: bool
    group_size: int
    seed: int
    serendipity: float
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    groups: float | None = Field(description="Groups planned (dry run) or proposed")
    placed: float | None
    unplaced: float | None
    coverage: float | None


class RoundPage(BaseModel):
    rounds: list[RoundSummary]
    next_before: datetime | None = Field(
        description="Pass as `before` for the next page; null: this was the last"
    )


@router.get(
    "/rounds",
    summary="Rounds, newest first, optionally of one pool",
    response_model=RoundPage,
    dependencies=[requires(Scope.ROUNDS_READ)],
)
async def list_rounds(
    request: Request,
    pool: Annotated[PoolName | None, Query(description="Only this pool's rounds")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        datetime | None, Query(description="`next_before` of the previous page")
    ] = None,
) -> RoundPage:
    rows = await _directory(request).rounds(pool, limit, before)
    more = len(rows) == limit
    return RoundPage(
        rounds=[RoundSummary.model_validate(r) for r in rows],
        next_before=rows[-1]["requested_at"] if rows and more else None,
    )


class PoolPreview(BaseModel):
    people: int = Field(description="Reachable, not opted-out people the selector takes in")


@router.post(
    "/pools/preview",
    summary="How many people a selector takes in (nothing is saved)",
    response_model=PoolPreview,
    dependencies=[requires(Scope.ROUNDS_READ)],
)
async def preview_pool(body: Selector, request: Request) -> PoolPreview:
    selector = body.model_dump(exclude_defaults=True)
    return PoolPreview(people=await _directory(request).pool_size(selector))


class PersonSummary(BaseModel):
    source: str = Field(description="The person as introductions present them: oldest identity")
    external_id: str
    name: str | None
    organization: str | None
    tags: list[str]
    snoozed_until: datetime | None
    opted_out: bool


class PeoplePage(BaseModel):
    people: list[PersonSummary]
    next_after: int | None = Field(
        description="Pass as `after` for the next page; null: this was the last"
    )


@router.get(
    "/contacts",
    summary="Find people by name, email, source id, tag or topic",
    response_model=PeoplePage,
    dependencies=[requires(Scope.CONTACTS_READ)],
)
async def search_contacts(
    request: Request,
    q: Annotated[
        str,
        Query(
            max_length=200,
            description="A part of the name, or a whole email address, id, tag or topic; "
            "empty: everyone",
        ),
        # PostgreSQL refuses NUL in text: a 422 naming `q`, never a 500.
        SINGLE_LINE,
    ] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[int | None, Query(ge=0, description="`next_after` of the previous page")] = (
        None
    ),
) -> PeoplePage:
    """Only people with an identity in one of the key's sources."""
    rows = await _directory(request).search(q, limit, after, grant_of(request).sources)
    return PeoplePage(
        people=[PersonSummary.model_validate(r) for r in rows],
        next_after=rows[-1]["cursor"] if len(rows) == limit else None,
    )


class InterestOut(BaseModel):
    topic: str
    kind: str
    weight: float
    declared_at: datetime


class ContactProfileOut(BaseModel):
    source: str
    external_id: str
    name: str | None
    organization: str | None
    timezone: str | None
    channels: list[dict[str, str]]
    tags: list[str]
    snoozed_until: datetime | None
    opted_out: bool
    reachable: bool
    contact_event: dict[str, Any] | None = Field(
        description="This identity's last contact event as its integration sent it"
    )
    interests: list[InterestOut] = Field(description="At most 500, by topic (`truncated`)")
    blocks: list[IdentityOut] = Field(description="People this person never wants to meet")
    truncated: TruncatedOut = Field(description="Whether a list holds fewer than roac has")


@router.get(
    "/contacts/{source}/{external_id:person_id}/profile",
    summary="A person's details, interests and block list",
    response_model=ContactProfileOut,
    dependencies=[requires(Scope.CONTACTS_READ)],
)
async def contact_profile(
    source: SourcePath, external_id: ExternalIdPath, request: Request
) -> ContactProfileOut:
    check_sources(request, Scope.CONTACTS_READ, [source])
    found = await _directory(request).profile(source, external_id)
    if found is None:
        raise HTTPException(404, "There is no such identity.")
    return ContactProfileOut.model_validate(found)


class ChannelOut(BaseModel):
    type: str
    address: str


class PreferencesOut(BaseModel):
    """What the person chose themselves (their preferences page, or set on their behalf)."""

    paused_until: datetime | None = Field(description="Their own pause")
    cap_per_week: int | None
    cap_per_month: int | None
    language: str | None
    channel_order: list[str] = Field(description="Their channel types, first choice first")
    opted_in_at: datetime | None = Field(description="When they chose to hear from roac again")
    changed_at: datetime | None


class TruncatedOut(BaseModel):
    interests: bool
    blocks: bool


# The right of access lists everything; the operators' profile page only the first ones.
HELD_LIMIT = 10_000


class ContactHeldOut(BaseModel):
    """What roac holds about a person, as the matcher applied it (the right of access's
    answer for the profile, preferences, identities, interests and block list)."""

    source: str
    external_id: str
    name: str | None = Field(description="Null while only interests of the person arrived")
    organization: str | None
    timezone: str | None
    language: str | None
    tags: list[str]
    channels: list[ChannelOut] = Field(description="In order of preference")
    snoozed_until: datetime | None
    opted_out: bool
    identities: list[IdentityOut] = Field(
        description="Every identity roac holds as this person, oldest first (merges included)"
    )
    interests: list[InterestOut] = Field(
        description="By topic, at most 10,000 (`truncated`); withdrawn ones are gone"
    )
    blocks: list[IdentityOut] = Field(description="People this person never wants to meet")
    preferences: PreferencesOut
    contact_event: dict[str, Any] | None = Field(
        description="This identity's last contact event as its integration sent it"
    )
    truncated: TruncatedOut = Field(description="Whether a list holds fewer than roac has")


@router.get(
    # After the routes under it (`/identity`, `/profile`): `:person_id` would take their suffixes.
    "/contacts/{source}/{external_id:person_id}",
    summary="What roac holds about a person: profile, preferences, identities and interests",
    response_model=ContactHeldOut,
    dependencies=[requires(Scope.CONTACTS_READ)],
)
async def contact_held(
    source: SourcePath, external_id: ExternalIdPath, request: Request
) -> ContactHeldOut:
    """The person's profile as the matcher holds it (the newest contact event of any of their
    identities), every identity merged into them, their interests and block list. 404 for a
    person roac does not know, or erased."""
    check_sources(request, Scope.CONTACTS_READ, [source])
    found = await _directory(request).profile(
        source, external_id, interest_limit=HELD_LIMIT, block_limit=HELD_LIMIT
    )
    contacts: ContactIdentities = request.app.state.contacts
    view = await contacts.view((source, external_id))
    if found is None or view is None:
        raise HTTPException(404, "There is no such identity.")
    return ContactHeldOut.model_validate({**found, "identities": identities_out(view)})
