"""The matcher's resources over HTTP: bring a resource (a link on some topics) to the people
most interested in them, preview who that would reach, and read how many it reached. Thin routes
over the `Resources` use case (resources.py); mounted under /v1 by routes.py."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.matcher.resources import Resources
from shared.authorization import requires
from shared.events import RequestableUrl, ResourceTitle, Topic
from shared.scopes import Scope
from shared.text_safety import kept_correlation_id

router = APIRouter()


class ResourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: RequestableUrl
    title: ResourceTitle
    topics: list[Topic] = Field(min_length=1, max_length=20)
    limit: int = Field(
        default=100, ge=1, le=1000, description="At most this many recipients for this request"
    )


class ResourceOut(BaseModel):
    resource_id: UUID
    recipients: int = Field(description="People this request brought it to")
    total_recipients: int = Field(description="People it was brought to so far")


@router.post(
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
    url: RequestableUrl | None = Field(
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


@router.post(
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


@router.get(
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
