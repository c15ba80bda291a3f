"""The console's Deliveries and Audit pages: parked (out of attempts) and failed (refused for
good) deliveries with the provider's last reason, retried one at a time or all at once through
the notifier's API; and the audit list of every action, newest first, with who did it."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from services.console.web import (
    FormRefused,
    Signed,
    audit,
    checked_form,
    console,
    correlation,
    redirect,
    render,
)

delivery_pages = APIRouter(include_in_schema=False)


@delivery_pages.get("/deliveries")
async def deliveries_page(
    request: Request,
    session: Signed,
    status: Annotated[str, Query(pattern="^(parked|failed)$")] = "parked",
    before: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    page = await console(request).apis.deliveries(status, before)
    rows = page["deliveries"]
    next_url = None
    if len(rows) == 50:
        next_url = "/deliveries?" + urlencode({"status": status, "before": rows[-1]["updated_at"]})
    return render(
        request,
        "deliveries.html.j2",
        session,
        title="Deliveries",
        section="deliveries",
        shown=status,
        deliveries=rows,
        counts=page["counts"],
        next_url=next_url,
    )


@delivery_pages.post("/deliveries/retry")
async def retry_deliveries(request: Request, session: Signed) -> Response:
    form = await checked_form(request, session)
    chosen = form.get("delivery", "")
    try:
        ids = None if chosen == "all" else [UUID(chosen)]
    except ValueError:
        raise FormRefused("No such delivery.") from None
    retried = await console(request).apis.retry_deliveries(ids, correlation("retry"))
    await audit(
        request,
        session,
        "retry deliveries",
        "every parked delivery" if ids is None else f"delivery {chosen}",
        "ok",
        f"{len(retried)} queued again",
    )
    return redirect("/deliveries?notice=retried")


@delivery_pages.get("/audit")
async def audit_page(
    request: Request, session: Signed, before: Annotated[int | None, Query(ge=1)] = None
) -> Response:
    rows = await console(request).accounts.audit(100, before)
    next_url = f"/audit?before={rows[-1]['id']}" if len(rows) == 100 else None
    return render(
        request,
        "audit.html.j2",
        session,
        title="Audit",
        section="audit",
        entries=rows,
        next_url=next_url,
    )
