"""The matcher's pools and rounds over HTTP: save and list pools, request a round, read it
(with a dry run's plan paged) and the introductions it proposed, and record how one went
(feedback). Thin routes over the `Rounds` and `Feedback` use cases (rounds.py, feedback.py);
mounted under /v1 by routes.py. The operators' list of rounds and a selector's preview are
read-only lists, in directory_routes.py."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.matcher.cron import parse_cron
from services.matcher.feedback import Feedback, FeedbackOutcome, UnknownProposal
from services.matcher.rounds import PoolNotFound, PoolSpec, Rounds
from services.matcher.schedules import (
    MAX_EVERY_WEEKS,
    CronSchedule,
    Schedule,
    schedule_from_json,
    wall_time,
)
from services.matcher.store.rows import PoolRow, RoundRow
from shared.authorization import requires
from shared.events import SourceName, TagName, TimezoneName
from shared.scopes import Scope
from shared.text_safety import SINGLE_LINE

router = APIRouter()

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


def _check_at(value: str | None) -> str | None:
    if value is not None:
        wall_time(value)  # "HH:MM", 00:00 to 23:59
    return value


def _check_cron(value: str | None) -> str | None:
    if value is not None:
        parse_cron(value)  # a ValueError naming the field of the expression that is wrong
    return value


def _absent(value: object) -> bool:
    return value is None


class ScheduleIn(BaseModel):
    """Rounds on these weekdays at this local time, or at the slots of a cron expression on the
    same local clock (kept across daylight-saving changes)."""

    model_config = ConfigDict(extra="forbid")
    # Absent from an answer rather than null: a schedule is one kind or the other.
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = Field(
        default=None, min_length=1, max_length=7, examples=[["mon"]], exclude_if=_absent
    )
    at: Annotated[str | None, AfterValidator(_check_at)] = Field(
        default=None,
        description="Local time of day, HH:MM (24-hour)",
        examples=["09:00"],
        exclude_if=_absent,
    )
    timezone: TimezoneName = Field(examples=["Europe/Berlin"])
    every_weeks: int = Field(default=1, ge=1, le=MAX_EVERY_WEEKS, description="2: every other")
    starting: date | None = Field(
        default=None,
        description="The first local date a round may run; every_weeks counts weeks from its "
        "week. Default: the date of the first slot after the pool is saved",
    )
    cron: Annotated[str | None, AfterValidator(_check_cron), SINGLE_LINE] = Field(
        default=None,
        max_length=200,
        description="Instead of weekdays and at: a five-field cron expression (minute hour "
        "day-of-month month day-of-week, names allowed) read on the local clock of `timezone`",
        examples=["0 9 * * mon", "30 8 1-7 * *"],
        exclude_if=_absent,
    )

    @field_validator("cron")
    @classmethod
    def _cron_alone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("weekdays") is not None or info.data.get("at") is not None:
            raise ValueError("a schedule has weekdays and at, or cron, not both")
        if info.data.get("every_weeks", 1) != 1 or info.data.get("starting") is not None:
            raise ValueError("every_weeks and starting are for weekdays and at, not cron")
        if "timezone" in info.data:
            CronSchedule(value, info.data["timezone"])  # refused when it never runs
        return value

    @model_validator(mode="after")
    def _weekly_or_cron(self) -> ScheduleIn:
        if self.cron is None and (self.weekdays is None or self.at is None):
            raise ValueError("a schedule needs weekdays and at (or a cron expression)")
        return self

    def to_schedule(self) -> Schedule:
        return schedule_from_json(self.model_dump(mode="json", exclude_none=True))


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
        default=None,
        description="Run rounds on weekdays at a local time, or on a cron expression; not with "
        "every_seconds",
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


@router.post(
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
            schedule=body.schedule.to_schedule() if body.schedule else None,
        )
    )
    response.status_code = 201 if created else 200
    return _pool_out(pool)


@router.get("/pools", summary="Every pool", dependencies=[requires(Scope.ROUNDS_READ)])
async def list_pools(request: Request) -> dict[str, list[PoolOut]]:
    return {"pools": [_pool_out(p) for p in await _rounds(request).pools()]}


@router.post(
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


@router.get(
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


@router.get(
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


@router.post(
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
