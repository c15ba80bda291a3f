"""`GET /v1/contacts/{source}/{external_id}` on ingest: what roac holds about one person, across
services (the right of access). Parses, calls `PersonAccess` (services/ingest/person_access.py),
answers; the same place an integration writes people is where it reads one back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.ingest.person_access import AccessUnavailable, PersonAccess, Refused
from services.ingest.routes import Person
from shared.authorization import check_sources, requires
from shared.person_path import PersonIdConvertor  # noqa: F401 - registers `:person_id`
from shared.problems import problem_response, problem_responses
from shared.scopes import Scope


class IntroductionHeld(BaseModel):
    id: str
    state: str | None = Field(description="asked, accepted, introduced, declined, expired, failed")
    reason: str | None
    topics: list[str | None]
    round: str | None = Field(description="The round that proposed it; null: live matching")
    created_at: datetime | None
    updated_at: datetime | None
    answer: str | None = Field(description="This person's answer to the ask")
    answered_at: datetime | None
    others: int = Field(description="How many others the introduction was with")
    introduced_to: list[str | None] = Field(
        description="Their names, once everyone said yes; empty before (their data, not yours)"
    )


class PersonHeld(BaseModel):
    """Everything roac holds about a person: the matcher's record of them (profile, preferences,
    identities, interests, block list) and the notifier's introductions with their answers."""

    person: dict[str, str] = Field(description="The identity asked about")
    collected_at: datetime
    name: str | None
    organization: str | None
    timezone: str | None
    language: str | None
    tags: list[str]
    channels: list[dict[str, str]] = Field(description="In order of preference")
    snoozed_until: datetime | None = Field(description="No introductions until then")
    opted_out: bool
    identities: list[dict[str, str]] = Field(description="Every identity held as this person")
    interests: list[dict[str, Any]]
    blocks: list[dict[str, str]] = Field(description="People this person never wants to meet")
    preferences: dict[str, Any] = Field(
        description="What they chose themselves: pause, caps, language, channel order, when "
        "they opted back in"
    )
    contact_event: dict[str, Any] | None = Field(
        description="The identity's last contact event as its integration sent it"
    )
    introductions: list[IntroductionHeld] = Field(description="Newest first, at most 2,000")
    truncated: dict[str, bool] = Field(
        description="Per list (interests, blocks, introductions): whether roac holds more "
        "than the answer shows"
    )

    model_config = {"extra": "allow"}  # what the matcher adds later is passed on, not dropped


access_api = APIRouter(prefix="/v1", tags=["ingest"])


@access_api.get(
    # `:person_id` (shared/person_path.py): an id may hold a slash, even a line break (refused).
    "/contacts/{source}/{external_id:person_id}",
    summary="What roac holds about a person, across services (right of access)",
    response_model=PersonHeld,
    dependencies=[requires(Scope.CONTACTS_READ, Scope.INTROS_READ)],
    responses=problem_responses(
        {
            401: "Missing or invalid API key",
            403: "The key lacks `contacts:read` for the person's source, or `intros:read` (the "
            "notifier's introductions are part of the answer)",
            404: "roac holds nobody by this id (or erased them)",
            422: "An invalid source or id",
            503: "The matcher or the notifier did not answer; nothing partial is returned, retry",
        }
    ),
)
async def person_held(person: Person, request: Request) -> Any:
    """The matcher's record of the person (profile, preferences, identities, interests and
    block list) and every introduction the notifier holds for any of their identities, with
    their answer. Read with the caller's own key in each service: it needs `contacts:read` for
    the source and `intros:read`."""
    check_sources(request, Scope.CONTACTS_READ, [person.source])
    access: PersonAccess = request.app.state.person_access
    try:
        return await access.record(person, request.headers["authorization"])
    except Refused as refused:
        return JSONResponse(
            refused.problem, status_code=refused.status, media_type="application/problem+json"
        )
    except AccessUnavailable as exc:
        return problem_response(
            503,
            "Unavailable",
            f"Part of the answer could not be read ({exc}); nothing partial is returned. "
            "Retry in a moment.",
            headers={"Retry-After": "2"},
        )
