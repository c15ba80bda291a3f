"""The matcher's HTTP API for operators correcting a person, for the console and any operator's
tool:

- undo a merge (`POST /v1/contacts/{source}/{external_id}/unmerge`), what `roac contacts
  unmerge` does. Scope `contacts:erase`, bound to the key's sources: undoing a merge rewrites
  who a person is, as erasing them does, and is as rare.
- block a pairing (`POST /v1/contacts/{source}/{external_id}/blocks`): the two are never
  introduced to each other again (pair_blocks.py). Scope `events:write` on both people's
  sources: the same key may already declare a person's blocks in their contact event."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from services.matcher.contacts_admin import ContactIdentities
from services.matcher.identity_resolution import UnmergeRefused
from services.matcher.pair_blocks import BlockRefused, PairBlocks
from shared.authorization import check_sources, requires
from shared.events import ContactRef
from shared.person_path import ExternalIdPath, SourcePath
from shared.problems import AUTH_PROBLEMS, BODY_PROBLEMS, problem_responses
from shared.scopes import Scope

operator_api = APIRouter(
    prefix="/v1",
    tags=["people"],
    responses=problem_responses(
        {
            **AUTH_PROBLEMS,
            **BODY_PROBLEMS,
            404: "No such person",
        }
    ),
)


class UnmergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    merge_id: UUID | None = Field(
        default=None,
        description="The merge to undo (`merges` of GET .../identity); needed only when the "
        "person has several",
    )


class UnmergeOut(BaseModel):
    merge_id: UUID
    remaining: list[ContactRef] = Field(description="One person again: these identities")
    restored: list[ContactRef] = Field(description="The other person again: these identities")


@operator_api.post(
    # `:person_id` (shared/person_path.py): an id may hold a slash, even a line break (refused).
    "/contacts/{source}/{external_id:person_id}/unmerge",
    summary="Undo the merge that joined this person with another (both come back, never merged "
    "automatically again)",
    response_model=UnmergeOut,
    dependencies=[requires(Scope.CONTACTS_ERASE)],
    responses=problem_responses(
        {409: "Nothing to undo: the person was never merged, or several merges and none named"}
    ),
)
async def unmerge_contact(
    source: SourcePath, external_id: ExternalIdPath, body: UnmergeIn, request: Request
) -> UnmergeOut:
    """Both people come back with their own identities, interests, introductions and profiles;
    contact.unmerged.v1 leaves through the outbox. Every identity of the person must be in the
    key's sources (the other side included)."""
    check_sources(request, Scope.CONTACTS_ERASE, [source])
    contacts: ContactIdentities = request.app.state.contacts
    found = await contacts.view((source, external_id))
    if found is None or not found.identities:
        raise HTTPException(404, "There is no such identity.")
    check_sources(request, Scope.CONTACTS_ERASE, sorted({i.source for i in found.identities}))
    try:
        data = await contacts.unmerge((source, external_id), body.merge_id)
    except UnmergeRefused as exc:
        raise HTTPException(409, f"Nothing undone: {exc}.") from exc
    return UnmergeOut(merge_id=data.merge_id, remaining=data.remaining, restored=data.restored)


class BlockOut(BaseModel):
    person: ContactRef
    other: ContactRef
    created: bool = Field(description="False: an operator had blocked this pairing already")


@operator_api.post(
    "/contacts/{source}/{external_id:person_id}/blocks",
    summary="Block a pairing: this person and the one in the body are never introduced to each "
    "other again",
    response_model=BlockOut,
    dependencies=[requires(Scope.EVENTS_WRITE)],
    responses=problem_responses(
        {
            404: "No such person (either of the two)",
            409: "The two identities are one person",
        }
    ),
)
async def block_pairing(
    source: SourcePath, external_id: ExternalIdPath, other: ContactRef, request: Request
) -> BlockOut:
    """No round and no live match puts the two in one group again (both directions), whatever
    their integrations send later; introductions already under way go on. Kept with this
    person's identity: it follows merges and unmerges, and goes when either is erased. Blocking
    a pairing twice changes nothing (`created` false). Both people's sources must be the
    key's."""
    check_sources(request, Scope.EVENTS_WRITE, sorted({source, other.source}))
    blocks: PairBlocks = request.app.state.pair_blocks
    try:
        done = await blocks.block((source, external_id), (other.source, other.external_id))
    except BlockRefused as exc:
        raise HTTPException(404 if exc.missing else 409, f"Not blocked: {exc}.") from exc
    return BlockOut(
        person=ContactRef(source=source, external_id=external_id),
        other=other,
        created=done.created,
    )
