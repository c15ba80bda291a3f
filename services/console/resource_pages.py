"""The console's Resources pages: share a resource with a topic list after previewing who it
would reach (the matcher's `POST /v1/resources/preview`, a page of people at a time), and a
resource's page with who received it (the notifier's `GET /v1/resources/deliveries`). Sharing is
recorded in the audit list like every action."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.console.clients import ApiError
from services.console.web import (
    Signed,
    audit,
    checked_form,
    console,
    correlation,
    redirect,
    render,
    split_list,
)

resource_pages = APIRouter(include_in_schema=False)
PREVIEW_PAGE = 20


def _resource_form(form: dict[str, str] | None = None) -> dict[str, Any]:
    form = form or {}
    return {
        "url": form.get("url", "").strip(),
        "title": form.get("title", "").strip(),
        "topics": form.get("topics", ""),
        "limit": form.get("limit", "100"),
    }


@resource_pages.get("/resources")
async def resources_page(request: Request, session: Signed) -> Response:
    return render(
        request,
        "resources.html.j2",
        session,
        title="Resources",
        section="resources",
        form=_resource_form(),
        preview=None,
    )


@resource_pages.post("/resources")
async def share_resource(request: Request, session: Signed) -> Response:
    """Preview who a resource would reach (a page of them at a time), or share it."""
    form = await checked_form(request, session)
    shown = _resource_form(form)
    topics = split_list(shown["topics"])
    apis = console(request).apis

    def refused(detail: str) -> Response:
        return render(
            request,
            "resources.html.j2",
            session,
            status=422,
            title="Resources",
            section="resources",
            form=shown,
            preview=None,
            error=detail,
        )

    if not topics:
        return refused("Give at least one topic.")
    if form.get("do") != "share":
        try:
            offset = max(0, int(form.get("from") or 0))
        except ValueError:
            offset = 0
        try:
            preview = await apis.preview_resource(topics, shown["url"], offset, PREVIEW_PAGE)
        except ApiError as exc:
            if exc.status != 422:
                raise
            return refused(exc.detail)
        return render(
            request,
            "resources.html.j2",
            session,
            title="Resources",
            section="resources",
            form=shown,
            preview=preview | {"first": offset + 1},
        )
    try:
        limit = int(shown["limit"])
    except ValueError:
        return refused("The number of people must be a whole number.")
    target = f"resource {shown['url']}"
    try:
        shared = await apis.share_resource(
            shown["url"], shown["title"], topics, limit, correlation("resource")
        )
    except ApiError as exc:
        await audit(request, session, "share resource", target, "refused", exc.detail)
        if exc.status != 422:
            raise
        return refused(f"The resource was not shared: {exc.detail}")
    await audit(
        request,
        session,
        "share resource",
        target,
        "ok",
        f"resource {shared['resource_id']}: {shared['recipients']} reached now, "
        f"{shared['total_recipients']} in all",
    )
    return redirect(f"/resources/{shared['resource_id']}?notice=resource-shared")


@resource_pages.get("/resources/{resource_id}")
async def resource_page(request: Request, session: Signed, resource_id: UUID) -> Response:
    apis = console(request).apis
    found, deliveries = await asyncio.gather(
        apis.resource(resource_id), apis.resource_deliveries(resource_id)
    )
    return render(
        request,
        "resource.html.j2",
        session,
        title=f"Resource: {found['title']}",
        section="resources",
        resource=found,
        deliveries=deliveries,
    )
