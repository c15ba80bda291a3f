"""`roac contacts`: an operator's view of one person's identities and merges, and unmerge."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from services.matcher import identity_resolution
from services.matcher.identity_store import IdentityRow, MergeRow
from services.matcher.store import MatcherStore
from shared.db import create_pool
from shared.events import UnmergeData
from shared.settings import Settings

Ref = tuple[str, str]


@dataclass(frozen=True)
class ContactView:
    contact_id: int
    identities: list[IdentityRow]
    merges: list[MergeRow]


async def show(settings: Settings, ref: Ref) -> ContactView | None:
    pool = await create_pool(settings, max_size=1)
    try:
        async with MatcherStore(pool).unit_of_work() as uow:
            identity = await uow.identities.identity(ref)
            if identity is None:
                return None
            return ContactView(
                identity.contact_id,
                await uow.identities.identities_of((identity.contact_id,)),
                await uow.identities.merges_into(identity.contact_id),
            )
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
