"""An operator's block of a pairing: two people never introduced to each other again, whatever
their integrations send (the matcher API's `POST /v1/contacts/{source}/{external_id}/blocks`,
the console's "block a pairing").

Blocks live where matching reads them: `matcher.blocks`, a contact's block list, which rounds
and live matching check for every pair (constraints.can_meet, both directions). That list is
rebuilt from its identities' declared blocks on every contact event, merge and unmerge
(identity_resolution.rebuild_blocks), so an operator's block is kept by identity in
`matcher.operator_blocks`, which the rebuild reads too: it survives the integration's next
upsert, follows merges and unmerges, and goes with an erasure. It is written under both
contacts' row locks, which merges and unmerges take too, on the contacts the identities belong
to once locked: a merge committed between the lookup and the lock is seen, and the block is
made again on the surviving contact (else the survivor's list would lack it until its next
contact event). A check-in's "not for me" is narrower: it declines that one group
(`matcher.groups.declined`), which a pair never proposed together does not have."""

from __future__ import annotations

from dataclasses import dataclass

from services.matcher import identity_resolution
from services.matcher.store import MatcherStore, MatcherUnitOfWork
from services.matcher.store.rows import IdentityRow
from shared.errors import TransientError

Ref = tuple[str, str]

# A merge or unmerge that commits between the lookup and the lock moves an identity to another
# contact: the block is tried again on the contacts as they are then, this many times in all.
ATTEMPTS = 2


class BlockRefused(Exception):
    """Not blocked: `missing` names an unknown identity, else the two are one person."""

    def __init__(self, message: str, missing: Ref | None = None) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class PairBlock:
    person: Ref
    other: Ref
    created: bool  # False: the operator had blocked them already


class PairBlocks:
    def __init__(self, store: MatcherStore) -> None:
        self._store = store

    async def block(self, person: Ref, other: Ref) -> PairBlock:
        """Block the pair in one transaction: the operator's row on `person`'s identity, and
        the block list of `person`'s contact rebuilt with it, under both contacts' locks."""
        for _ in range(ATTEMPTS):
            async with self._store.unit_of_work() as uow:
                mine, theirs = await _both(uow, person, other)
                contacts = (mine.contact_id, theirs.contact_id)
                await uow.identities.lock_contacts(contacts)
                # Read again under the locks, which a merge or unmerge moving either identity
                # must take too: when both are still where they were, they stay there until
                # this commits, so the rebuilt block list is the one matching reads.
                mine, theirs = await _both(uow, person, other)
                if (mine.contact_id, theirs.contact_id) != contacts:
                    continue  # moved meanwhile: the transaction ends without writing
                created = await uow.identities.add_operator_block(mine.id, theirs.id)
                await identity_resolution.rebuild_blocks(uow, {mine.contact_id})
                return PairBlock(person, other, created)
        # Merged or unmerged at every attempt: the operator may simply try again.
        raise TransientError("the two people's contacts kept changing (merges); not blocked")


async def _both(uow: MatcherUnitOfWork, person: Ref, other: Ref) -> tuple[IdentityRow, IdentityRow]:
    """The two identities, refused when either is unknown or both are one person."""
    mine = await uow.identities.identity(person)
    theirs = await uow.identities.identity(other)
    if mine is None or theirs is None:
        missing = person if mine is None else other
        raise BlockRefused(f"there is no identity {missing[0]}/{missing[1]}", missing)
    if mine.contact_id == theirs.contact_id:
        raise BlockRefused("the two identities are one person (merged)")
    return mine, theirs
