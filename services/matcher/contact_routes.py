"""A person's identities over HTTP: who roac holds as one person with an identity, and every
merge that joined them, with its reason (`GET /v1/contacts/{source}/{external_id}/identity`).
A thin route over the `ContactIdentities` use case (contacts_admin.py); mounted under /v1 by
routes.py. The person's path parameters and `IdentityOut` are shared with the read-back in
directory_routes.py and the operators' unmerge (operator_routes.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from services.matcher.contacts_admin import ContactIdentities, ContactView
from shared.authorization import check_sources, requires
from shared.person_path import ExternalIdPath, SourcePath
from shared.scopes import Scope

router = APIRouter()


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


def identities_out(view: ContactView) -> list[IdentityOut]:
    """Every identity of the person, oldest first."""
    return [IdentityOut(source=i.source, external_id=i.external_id) for i in view.identities]


def _identity_out(view: ContactView) -> ContactIdentityOut:
    identities = identities_out(view)
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


@router.get(
    # `:person_id` (shared/person_path.py): an id may hold a slash, even a line break (refused).
    "/contacts/{source}/{external_id:person_id}/identity",
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
