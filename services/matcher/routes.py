"""The matcher's HTTP API: pools, rounds, feedback, resources, and a person's identities and
merges (on ROAC_MATCHER_PORT, API key required)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from services.matcher.contacts_admin import ContactIdentities, ContactView
from services.matcher.directory import Directory
from services.matcher.feedback import Feedback, FeedbackOutcome, UnknownProposal
from services.matcher.resources import Resources
from services.matcher.rounds import PoolNotFound, PoolSpec, Rounds
from services.matcher.schedules import MAX_EVERY_WEEKS, WeeklySchedule, wall_time
from services.matcher.store.rows import PoolRow, RoundRow
from shared.authorization import check_sources, grant_of, requires
from shared.events import ResourceTitle, SourceName, TagName, TimezoneName, Topic, WebUrl
from shared.problems import AUTH_PROBLEMS, BODY_PROBLEMS, problem_responses
from shared.scopes import Scope
from shared.text_safety import SINGLE_LINE, kept_correlation_id

api = APIRouter(
    prefix="/v1",
    tags=["pools and rounds"],
    responses=problem_responses(
        {
            **AUTH_PROBLEMS,
            **BODY_PROBLEMS,
            404: "No such pool, round, introduction, resource or person",
        }
    ),
)

PoolName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
]
RuleLevelName = Literal["required", "preferred", "off"]


class Selector(BaseModel):
    """Who is in a pool; every criterion given must hold (within one, any value). Empty: all."""

    model_config = ConfigDict(extra="forbid")
    tags: list[TagName] = Field(default_factory=list, max_length=50)
    sources: list[SourceName] = Field(default_factory=list, max_length=50)
    organizations: list[
        Annotated[str, StringConstraints(min_length=1, max_length=200), SINGLE_LINE]
    ] = Field(default_factory=list, max_length=50)


class PoolRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    different_organization: RuleLevelName = "required"
    same_timezone: RuleLevelName = "off"


def _check_at(value: str) -> str:
    wall_time(value)  # "HH:MM", 00:00 to 23:59
    return value


class ScheduleIn(BaseModel):
    """Rounds on these weekdays at this local time (kept across daylight-saving changes)."""

    model_config = ConfigDict(extra="forbid")
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        min_length=1, max_length=7, examples=[["mon"]]
    )
    at: Annotated[str, AfterValidator(_check_at)] = Field(
        description="Local time of day, HH:MM (24-hour)", examples=["09:00"]
    )
    timezone: TimezoneName = Field(examples=["Europe/Berlin"])
    every_weeks: int = Field(default=1, ge=1, le=MAX_EVERY_WEEKS, description="2: every other")
    starting: date | None = Field(
        default=None,
        description="The first local date a round may run; every_weeks counts weeks from its "
        "week. Default: the date of the first slot after the pool is saved",
    )


class PoolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PoolName
    selector: Selector = Field(default_factory=Selector)
    group_size: int = Field(default=2, ge=2, le=6)
    serendipity: float = Field(default=0.0, ge=0, le=10)
    rules: PoolRules = Field(default_factory=PoolRules)
    every_seconds: int | None = Field(
        default=None,
        ge=60,
        le=366 * 86400,  # at most yearly: the schedule is stored as a 4-byte integer of seconds
        description="Run a round this often (e.g. 86400: daily; at most 366 days), the first "
        "at once; null: never (or on `schedule`)",
    )
    schedule: ScheduleIn | None = Field(
        default=None, description="Run rounds on weekdays at a local time; not with every_seconds"
    )
    checkin_after_days: int | None = Field(
        default=None,
        ge=1,
        le=90,
        description="Days after its introductions that people are asked whether they met; "
        "null: the notifier's ROAC_CHECKIN_AFTER_SECONDS (7 days)",
    )

    @field_validator("schedule")
    @classmethod
    def _one_schedule(cls, value: ScheduleIn | None, info: ValidationInfo) -> ScheduleIn | None:
        if value is not None and info.data.get("every_seconds") is not None:
            raise ValueError("a pool has every_seconds or a schedule, not both")
        return value


class PoolOut(PoolIn):
    next_round_at: datetime | None = Field(default=None, description="When the next round is due")
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RoundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pool: PoolName = "everyone"
    group_size: int | None = Field(default=None, ge=2, le=6, description="Default: the pool's")
    seed: int | None = Field(
        default=None, ge=0, lt=2**63, description="Same seed, same data: same round"
    )
    serendipity: float | None = Field(default=None, ge=0, le=10)
    dry_run: bool = Field(default=False, description="Plan and report the round; propose nothing")


class RoundOut(BaseModel):
    id: UUID
    pool: str
    status: str
    group_size: int
    seed: int
    serendipity: float
    dry_run: bool
    attempts: int
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    stats: dict[str, Any] | None
    error: str | None
    plan: list[dict[str, Any]] | None = Field(
        default=None, description="A dry run's groups (participants, score, reason)"
    )
    plan_size: int | None = Field(
        default=None, description="How many groups the plan has (with plan_limit/plan_offset)"
    )
    feedback: dict[str, int] = Field(
        default_factory=dict, description="Feedback received on its introductions, by outcome"
    )


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: FeedbackOutcome
    rating: int | None = Field(default=None, ge=1, le=5)


class FeedbackOut(BaseModel):
    proposal_id: UUID
    outcomes: dict[str, int]
    mean_rating: float | None


def _rounds(request: Request) -> Rounds:
    rounds: Rounds = request.app.state.rounds
    return rounds


def _pool_out(pool: PoolRow) -> PoolOut:
    return PoolOut(
        name=pool.name,
        selector=Selector.model_validate(pool.selector),
        group_size=pool.group_size,
        serendipity=pool.serendipity,
        rules=PoolRules.model_validate(pool.rules),
        every_seconds=pool.every_seconds,
        schedule=ScheduleIn.model_validate(pool.schedule) if pool.schedule else None,
        checkin_after_days=pool.checkin_after_days,
        next_round_at=pool.next_round_at,
        created_at=pool.created_at,
        updated_at=pool.updated_at,
    )


def _round_out(row: RoundRow) -> RoundOut:
    return RoundOut(
        id=row.id,
        pool=row.pool,
        status=row.status,
        group_size=row.group_size,
        seed=row.seed,
        serendipity=row.serendipity,
        dry_run=row.dry_run,
        attempts=row.attempts,
        requested_at=row.requested_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        stats=row.stats,
        error=row.error,
        plan=row.plan,
    )


@api.post(
    "/pools",
    summary="Create or replace a pool",
    response_model=PoolOut,
    responses={201: {"model": PoolOut, "description": "Created (200: replaced)"}},
    dependencies=[requires(Scope.ROUNDS_WRITE)],
)
async def save_pool(body: PoolIn, request: Request, response: Response) -> PoolOut:
    pool, created = await _rounds(request).save_pool(
        PoolSpec(
            name=body.name,
            selector=body.selector.model_dump(exclude_defaults=True),
            group_size=body.group_size,
            serendipity=body.serendipity,
            rules=body.rules.model_dump(),
            every_seconds=body.every_seconds,
            checkin_after_days=body.checkin_after_days,
            schedule=WeeklySchedule.from_json(body.schedule.model_dump(mode="json"))
            if body.schedule
            else None,
        )
    )
    response.status_code = 201 if created else 200
    return _pool_out(pool)


@api.get("/pools", summary="Every pool", dependencies=[requires(Scope.ROUNDS_READ)])
async def list_pools(request: Request) -> dict[str, list[PoolOut]]:
    return {"pools": [_pool_out(p) for p in await _rounds(request).pools()]}


@api.post(
    "/rounds",
    status_code=202,
    summary="Request a round",
    response_model=RoundOut,
    dependencies=[requires(Scope.ROUNDS_WRITE)],
)
async def request_round(body: RoundIn, request: Request, response: Response) -> RoundOut:
    try:
        row = await _rounds(request).request(
            body.pool,
            group_size=body.group_size,
            seed=body.seed,
            serendipity=body.serendipity,
            dry_run=body.dry_run,
        )
    except PoolNotFound:
        raise HTTPException(404, f"There is no pool named '{body.pool}'.") from None
    response.headers["Location"] = f"/v1/rounds/{row.id}"
    return _round_out(row)


@api.get(
    "/rounds/{round_id}",
    summary="A round's status and statistics",
    response_model=RoundOut,
    dependencies=[requires(Scope.ROUNDS_READ)],
)
async def get_round(
    round_id: UUID,
    request: Request,
    plan_offset: Annotated[int, Query(ge=0, description="A dry run's groups from this one")] = 0,
    plan_limit: Annotated[
        int | None, Query(ge=1, le=1000, description="At most this many groups; null: all")
    ] = None,
) -> RoundOut:
    rounds = _rounds(request)
    if plan_limit is not None or plan_offset:
        found = await request.app.state.directory.round_with_plan_page(
            round_id, plan_offset, plan_limit or 1000
        )
        if found is None:
            raise HTTPException(404, "There is no such round.")
        out = RoundOut.model_validate(found)
    else:
        row = await rounds.get(round_id)
        if row is None:
            raise HTTPException(404, "There is no such round.")
        out = _round_out(row)
    out.feedback = await rounds.feedback(round_id)
    return out


@api.get(
    "/rounds/{round_id}/intros",
    summary="The introductions a round proposed",
    dependencies=[requires(Scope.ROUNDS_READ)],
)
async def round_intros(
    round_id: UUID,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[UUID | None, Query(description="The last id of the previous page")] = None,
) -> dict[str, Any]:
    rounds = _rounds(request)
    if await rounds.get(round_id) is None:
        raise HTTPException(404, "There is no such round.")
    return {"intros": await rounds.proposals(round_id, limit, after)}


@api.post(
    "/intros/{proposal_id}/feedback",
    status_code=201,
    summary="Say how an introduction went",
    response_model=FeedbackOut,
    dependencies=[requires(Scope.INTROS_WRITE)],
)
async def give_feedback(proposal_id: UUID, body: FeedbackIn, request: Request) -> FeedbackOut:
    feedback: Feedback = request.app.state.feedback
    try:
        summary = await feedback.record(proposal_id, body.outcome, body.rating)
    except UnknownProposal:
        raise HTTPException(404, "There is no such introduction.") from None
    return FeedbackOut(
        proposal_id=summary.proposal_id,
        outcomes=summary.outcomes,
        mean_rating=summary.mean_rating,
    )


class ResourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: WebUrl
    title: ResourceTitle
    topics: list[Topic] = Field(min_length=1, max_length=20)
    limit: int = Field(
        default=100, ge=1, le=1000, description="At most this many recipients for this request"
    )


class ResourceOut(BaseModel):
    resource_id: UUID
    recipients: int = Field(description="People this request brought it to")
    total_recipients: int = Field(description="People it was brought to so far")


@api.post(
    "/resources",
    status_code=202,
    summary="Bring a resource to the people most interested in its topics",
    response_model=ResourceOut,
    dependencies=[requires(Scope.RESOURCES_WRITE)],
)
async def share_resource(body: ResourceIn, request: Request, response: Response) -> ResourceOut:
    resources: Resources = request.app.state.resources
    # Kept only when the whole header is a sane token (shared/text_safety.py).
    correlation = kept_correlation_id(request.headers.get("x-correlation-id"))
    shared = await resources.share(
        body.url,
        body.title,
        list(dict.fromkeys(body.topics)),
        body.limit,
        correlation or f"resource-{uuid4()}",
    )
    response.headers["Location"] = f"/v1/resources/{shared.resource_id}"
    return ResourceOut(
        resource_id=shared.resource_id,
        recipients=shared.recipients,
        total_recipients=shared.total_recipients,
    )


class ResourcePreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topics: list[Topic] = Field(min_length=1, max_length=20)
    url: WebUrl | None = Field(
        default=None, description="Leave out the people this resource was already brought to"
    )
    offset: int = Field(default=0, ge=0, le=1_000_000, description="Skip this many (paging)")
    limit: int = Field(default=20, ge=1, le=200, description="At most this many in the sample")


class PreviewRecipientOut(BaseModel):
    source: str
    external_id: str
    score: float = Field(description="The sum of their age-decayed weights on these topics")
    topics: list[str] = Field(description="The resource's topics they like or seek")


class ResourcePreviewOut(BaseModel):
    people: int = Field(
        description="Everyone who may receive it now (reachable, not paused, under the resource "
        "cap, not given it yet); a share reaches the best `limit` of them"
    )
    recipients: list[PreviewRecipientOut] = Field(description="A page of them, best first")
    next_offset: int | None = Field(description="The `offset` of the next page, if any")


@api.post(
    "/resources/preview",
    summary="Who sharing a resource would reach now: a count and a sample, paged (sends nothing)",
    response_model=ResourcePreviewOut,
    dependencies=[requires(Scope.RESOURCES_READ)],
)
async def preview_resource(body: ResourcePreviewIn, request: Request) -> ResourcePreviewOut:
    resources: Resources = request.app.state.resources
    found = await resources.preview(
        list(dict.fromkeys(body.topics)), body.url, body.offset, body.limit
    )
    return ResourcePreviewOut(
        people=found.people,
        recipients=[PreviewRecipientOut(**r) for r in found.sample],
        next_offset=found.next_offset,
    )


@api.get(
    "/resources/{resource_id}",
    summary="A resource and how many people it reached",
    dependencies=[requires(Scope.RESOURCES_READ)],
)
async def get_resource(resource_id: UUID, request: Request) -> dict[str, Any]:
    resources: Resources = request.app.state.resources
    found = await resources.get(resource_id)
    if found is None:
        raise HTTPException(404, "There is no such resource.")
    return found


# A person as an integration knows them, in the path (the same rules as ContactRef's fields).
SourcePath = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="Source"),
]
ExternalIdPath = Annotated[
    str, Path(min_length=1, max_length=256, description="The person's id in that source")
]


class IdentityOut(BaseModel):
    source: str
    external_id: str


class MergeOut(BaseModel):
    merge_id: UUID
    merged_at: datetime
    undone_at: datetime | None = Field(
        description="When an operator undid it (roac contacts unmerge)"
    )
    matched_on: Literal["email", "chat_handle"] = Field(
        description="What the two identities shared (never its value)"
    )
    reason: Literal["same_source", "verified_sources", "unrecorded"] = Field(
        description="Why they could merge: both identities from one source, or from two sources "
        "listed in ROAC_IDENTITY_VERIFIED_SOURCES; unrecorded: merged before reasons were kept"
    )
    sources: list[str] = Field(
        description="The sources of the two identities that shared the key, the surviving "
        "contact's first (empty when unrecorded)"
    )
    identities: list[IdentityOut] = Field(
        description="The identities the merge brought in (an erased one is left out)"
    )


class ContactIdentityOut(BaseModel):
    source: str = Field(
        description="The person as introductions present them: their oldest identity"
    )
    external_id: str
    identities: list[IdentityOut] = Field(description="Every identity of the person, oldest first")
    merges: list[MergeOut] = Field(
        description="Every merge of the person, undone too, newest first"
    )


def _identity_out(view: ContactView) -> ContactIdentityOut:
    identities = [IdentityOut(source=i.source, external_id=i.external_id) for i in view.identities]
    merges = [
        MergeOut(
            merge_id=m.id,
            merged_at=m.merged_at,
            undone_at=m.undone_at,
            matched_on="chat_handle" if m.matched_on == "chat_handle" else "email",
            reason=m.reason if m.reason in ("same_source", "verified_sources") else "unrecorded",
            sources=list(m.sources),
            identities=[
                IdentityOut(source=view.refs[i][0], external_id=view.refs[i][1])
                for i in m.identity_ids
                if i in view.refs
            ],
        )
        for m in view.history
    ]
    return ContactIdentityOut(
        source=identities[0].source,
        external_id=identities[0].external_id,
        identities=identities,
        merges=merges,
    )


@api.get(
    # `:path`: an id may hold a slash (sent as %2F, which the server decodes before routing).
    "/contacts/{source}/{external_id:path}/identity",
    summary="A person's identities and every merge that joined them, with its reason",
    response_model=ContactIdentityOut,
    dependencies=[requires(Scope.CONTACTS_READ)],
)
async def contact_identity(
    source: SourcePath, external_id: ExternalIdPath, request: Request
) -> ContactIdentityOut:
    """The identities roac holds as one person with this one, and each merge: when, on what key
    (email or chat handle, never the value) and why it was allowed. Undo one with
    `roac contacts unmerge`."""
    check_sources(request, Scope.CONTACTS_READ, [source])
    contacts: ContactIdentities = request.app.state.contacts
    view = await contacts.view((source, external_id))
    if view is None or not view.identities:
        raise HTTPException(404, "There is no such identity.")
    return _identity_out(view)


# Lists for operators (the console): each paged, each read-only (services/matcher/directory.py).


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


@api.get(
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


@api.post(
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


@api.get(
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
    interests: list[InterestOut] = Field(description="At most 500, by topic")
    blocks: list[IdentityOut] = Field(description="People this person never wants to meet")


@api.get(
    "/contacts/{source}/{external_id:path}/profile",
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


class ContactHeldOut(BaseModel):
    """What roac holds about a person, as the matcher applied it (the right of access's
    answer for the profile, identities and interests)."""

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
        description="At most 500, by topic; withdrawn ones are gone"
    )
    blocks: list[IdentityOut] = Field(description="People this person never wants to meet")


@api.get(
    # After the routes under it (`/identity`, `/profile`): `:path` would take their suffixes.
    "/contacts/{source}/{external_id:path}",
    summary="What roac holds about a person: profile, identities and interests",
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
    found = await _directory(request).profile(source, external_id)
    contacts: ContactIdentities = request.app.state.contacts
    view = await contacts.view((source, external_id))
    if found is None or view is None:
        raise HTTPException(404, "There is no such identity.")
    identities = [IdentityOut(source=i.source, external_id=i.external_id) for i in view.identities]
    return ContactHeldOut.model_validate({**found, "identities": identities})
