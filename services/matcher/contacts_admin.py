"""One person's identities and merges, for an operator: `roac contacts show` and `unmerge`, and
the matcher API's `GET /v1/contacts/{source}/{external_id}/identity` and `POST .../unmerge`
(operator_routes.py), so every merge and why it was allowed (same source, or verified sources)
can be checked, and undone when wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from services.matcher import identity_resolution
from services.matcher.store import MatcherStore, MatcherUnitOfWork
from services.matcher.store.rows import IdentityRow, MergeRow
from shared.db import create_pool
from shared.events import UnmergeData
from shared.settings import Settings

Ref = tuple[str, str]


@dataclass(frozen=True)
class ContactView:
    contact_id: int
    identities: list[IdentityRow]
    # The merges into the contact not undone: what `unmerge` chooses from.
    merges: list[MergeRow]
    # Every merge of the person, undone ones too, newest first.
    history: list[MergeRow] = field(default_factory=list)
    # (source, external_id) of the identities the merges in `history` brought, by identity id
    # (an erased identity is missing).
    refs: dict[int, Ref] = field(default_factory=dict)


async def view(uow: MatcherUnitOfWork, ref: Ref) -> ContactView | None:
    identity = await uow.identities.identity(ref)
    if identity is None:
        return None
    history = await uow.identities.merge_history(identity.contact_id)
    return ContactView(
        identity.contact_id,
        await uow.identities.identities_of((identity.contact_id,)),
        await uow.identities.merges_into(identity.contact_id),
        history,
        await uow.identities.refs_of(i for m in history for i in m.identity_ids),
    )


class ContactIdentities:
    """The matcher API's read of a person's identities and merge history."""

    def __init__(self, store: MatcherStore) -> None:
        self._store = store

    async def view(self, ref: Ref) -> ContactView | None:
        async with self._store.unit_of_work() as uow:
            return await view(uow, ref)

    async def unmerge(self, ref: Ref, merge_id: UUID | None) -> UnmergeData:
        """Undo one merge (the matcher API's `POST .../unmerge`, as `roac contacts unmerge`);
        raises `identity_resolution.UnmergeRefused` when there is none to undo, or several
        and none named."""
        async with self._store.unit_of_work() as uow:
            return await identity_resolution.unmerge(uow, ref, merge_id)


async def show(settings: Settings, ref: Ref) -> ContactView | None:
    pool = await create_pool(settings, max_size=1)
    try:
        return await ContactIdentities(MatcherStore(pool)).view(ref)
    finally:
        await pool.close()


async def unmerge(settings: Settings, ref: Ref, merge_id: UUID | None) -> UnmergeData:
    """Undo one merge in one transaction; contact.unmerged.v1 leaves through the outbox (a
    running matcher's relay publishes it)."""
    pool = await create_pool(settings, max_size=1)
    try:
        async with MatcherStore(pool).unit_of_work() as uow:
            return await identity_resolution.unmerge(uow, ref, merge_id)
    finally:
        await pool.close()
