"""Identity resolution: one person known through several sources becomes one contact.

Applied inside the transaction of a batch of contact events: each identity's own newest
profile and match keys are kept; identities that share a key (identity_keys) are merged into
the older contact, which becomes the person's only contact (the absorbed one stays as a
tombstone), but only when their sources allow it (one source, or two verified ones: a source
that could send anyone's email must not take over someone); the merge is recorded with its
reason and emitted (contact.merged.v1). The contact's channels are its identities' own, oldest
identity first (identity_keys.merged_channels), so one source cannot redirect what another's
person receives; the rest of its profile is the newest of its identities', its blocks the union
of theirs. `unmerge` undoes a merge exactly enough to give both sides back their identities,
interests, introductions and profiles, and vetoes merging them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from services.matcher import metrics
from services.matcher.identity_keys import (
    Components,
    Link,
    links_between,
    match_keys,
    merged_channels,
)
from services.matcher.store.rows import IdentityProfile, IdentityRow, MergeRow, ProfileRow, Resolved
from shared.events import (
    ChannelAddress,
    ChannelType,
    ContactData,
    ContactMerged,
    ContactRef,
    ContactUnmerged,
    ContactUpserted,
    MergeData,
    UnmergeData,
)

if TYPE_CHECKING:
    from services.matcher.store import MatcherUnitOfWork

Ref = tuple[str, str]


class UnmergeRefused(Exception):
    """The identity is unknown, not merged, or its contact has several merges to choose from."""


def channels_of(contact: ContactData) -> list[ChannelAddress]:
    """The contact's channels in preference order, with `email` first unless already listed."""
    channels = list(contact.channels)
    if contact.email and not any(
        c.type is ChannelType.EMAIL and c.address.lower() == contact.email.lower() for c in channels
    ):
        # Constructed: the address was validated as the contact's email.
        channels.insert(
            0, ChannelAddress.model_construct(type=ChannelType.EMAIL, address=contact.email)
        )
    return channels


def profile_row(contact_id: int, data: ContactData, at: datetime) -> ProfileRow:
    return ProfileRow(
        contact_id=contact_id,
        name=data.name,
        organization=data.organization,
        timezone=data.timezone,
        channels=channels_of(data),
        profile_at=at,
        tags=tuple(sorted(set(data.tags))),
        snoozed_until=data.snoozed_until,
        language=data.language,
    )


@dataclass(frozen=True)
class ContactsApplied:
    """Where each identity of the batch ended up, and who just became reachable."""

    contacts: dict[Ref, int]
    became_reachable: set[int]


async def apply_contacts(
    uow: MatcherUnitOfWork,
    latest: dict[Ref, ContactUpserted],
    verified: frozenset[str] = frozenset(),
) -> ContactsApplied:
    """Store the newest contact event of each identity, merge identities that are one person
    (within one source, or across the `verified` sources), and bring each touched contact's
    profile and blocks up to date."""
    blocked_refs = {(b.source, b.external_id) for e in latest.values() for b in e.data.blocks}
    resolved: dict[Ref, Resolved] = await uow.identities.resolve(set(latest) | blocked_refs)
    keys = {resolved[ref].identity_id: match_keys(event.data) for ref, event in latest.items()}
    kinds = {digest: kind for found in keys.values() for digest, kind in found.items()}
    # Serialise per key: of two identities with one email arriving at once, the second sees
    # the first and merges instead of both missing each other.
    await uow.identities.lock_keys(kinds)
    fresh = await uow.identities.record_profiles(
        [
            IdentityProfile(
                resolved[ref].identity_id, event.data.model_dump(mode="json"), event.occurred_at
            )
            for ref, event in latest.items()
        ]
    )
    await uow.identities.replace_keys({i: set(keys[i]) for i in fresh})
    components = Components()
    if fresh:
        owners = await uow.identities.key_owners(d for i in fresh for d in keys[i])
        for link in links_between(owners, kinds, verified):
            a, b = components.root(link.a), components.root(link.b)
            if a == b:
                continue
            if not link.allowed:
                # The key's value is never logged: only that a merge was refused, and on what.
                metrics.MERGES_REFUSED.labels(link.matched_on).inc()
                continue
            if await uow.identities.vetoed(a, b):
                continue
            survivor, absorbed = components.join(a, b)
            # The sources of the two identities that shared the key, the survivor's first.
            sources = link.sources if survivor == a else link.sources[::-1]
            cause = next(iter(latest.values()))
            await _merge(uow, survivor, absorbed, replace(link, sources=sources), cause)
    contacts = {ref: components.root(found.contact_id) for ref, found in resolved.items()}
    merged = {contacts[ref] for ref in latest if contacts[ref] != resolved[ref].contact_id}
    merged |= {components.root(c) for c in components.absorbed}
    # A person merged before has channels from several identities: rebuilt from all of them,
    # under the contact's lock, so an update of one identity changes only its own channels.
    shared = await uow.identities.shared_contacts(
        contacts[ref] for ref in latest if contacts[ref] not in merged
    )
    if shared:
        await uow.identities.lock_contacts(shared)
    # Otherwise the event itself is the identity's newest profile, and the contact's guard
    # (profile_at) keeps the newest of its identities': no need to read them back.
    became_reachable = await uow.contacts.update_profiles(
        [
            profile_row(contacts[ref], event.data, event.occurred_at)
            for ref, event in latest.items()
            if contacts[ref] not in merged | shared
        ]
    )
    if merged or shared:
        became_reachable |= await rebuild_profiles(uow, merged | shared)
    await rebuild_blocks(uow, {contacts[ref] for ref in latest})
    return ContactsApplied(contacts, became_reachable)


async def _merge(
    uow: MatcherUnitOfWork, survivor: int, absorbed: int, link: Link, cause: ContactUpserted
) -> None:
    assert link.reason is not None  # only allowed links are merged
    await uow.identities.lock_contacts((survivor, absorbed))
    before = await uow.identities.identities_of((survivor,))
    merge_id = uuid4()
    matched_on = link.matched_on
    moved = set(
        await uow.identities.merge(
            merge_id, survivor, absorbed, matched_on, link.reason, link.sources
        )
    )
    merged = [i for i in await uow.identities.identities_of((survivor,)) if i.id in moved]
    metrics.MERGES.labels(matched_on).inc()
    await uow.enqueue(
        [
            ContactMerged(
                source="matcher",
                **cause.consequence(),
                data=MergeData(
                    merge_id=merge_id,
                    into=[_ref(i) for i in before],
                    merged=[_ref(i) for i in merged],
                    matched_on="email" if matched_on == "email" else "chat_handle",
                ),
            )
        ]
    )


async def rebuild_profiles(
    uow: MatcherUnitOfWork, contact_ids: Iterable[int], *, force: bool = False
) -> set[int]:
    """Set each contact's profile to the newest of its identities' and its channels to all of
    theirs, oldest identity's first (force: even when the newest is older than what the
    contact shows, as after an unmerge); return those that just became reachable."""
    newest: dict[int, tuple[ContactData, datetime]] = {}
    own_channels: dict[int, list[list[ChannelAddress]]] = {}
    # Oldest identity first (identities_of's order): the one the person is presented under.
    for identity in await uow.identities.identities_of(contact_ids):
        if identity.profile is None or identity.profile_at is None:
            continue
        data = ContactData.model_validate(identity.profile)
        own_channels.setdefault(identity.contact_id, []).append(channels_of(data))
        best = newest.get(identity.contact_id)
        if best is None or best[1] <= identity.profile_at:
            newest[identity.contact_id] = (data, identity.profile_at)
    rows = [
        replace(
            profile_row(contact_id, data, at),
            channels=merged_channels(own_channels[contact_id]),
        )
        for contact_id, (data, at) in newest.items()
    ]
    return await uow.contacts.update_profiles(rows, force=force)


async def rebuild_blocks(uow: MatcherUnitOfWork, contact_ids: Iterable[int]) -> None:
    """Each contact's block list: everyone any of its identities blocks."""
    owners = set(contact_ids)
    wanted: dict[int, set[Ref]] = {owner: set() for owner in owners}
    for owner, ref in await uow.identities.declared_blocks(owners):
        wanted[owner].add(ref)
    known = await uow.identities.known_contacts(r for refs in wanted.values() for r in refs)
    await uow.contacts.replace_blocks(
        {owner: {known[r] for r in refs if r in known} - {owner} for owner, refs in wanted.items()}
    )


async def unmerge(uow: MatcherUnitOfWork, ref: Ref, merge_id: UUID | None = None) -> UnmergeData:
    """Undo the merge that joined this identity's contact with another: the newest one that
    brought this identity in, or the only one into its contact, or the one named."""
    identity = await uow.identities.identity(ref)
    if identity is None:
        raise UnmergeRefused("no such identity")
    merge = _choose(identity, await uow.identities.merges_into(identity.contact_id), merge_id)
    await uow.identities.lock_contacts((merge.survivor_id, merge.absorbed_id))
    blockers = await uow.identities.blockers_of(merge.survivor_id)
    restored_ids, remaining_ids = await uow.identities.undo_merge(merge)
    sides = (merge.survivor_id, merge.absorbed_id)
    await rebuild_profiles(uow, sides, force=True)
    identities = await uow.identities.identities_of(sides)
    for contact_id in sides:
        await uow.identities.set_opted_out(
            contact_id, any(i.opted_out for i in identities if i.contact_id == contact_id)
        )
    await rebuild_blocks(uow, set(sides) | blockers)
    by_id = {i.id: i for i in identities}
    data = UnmergeData(
        merge_id=merge.id,
        remaining=[_ref(by_id[i]) for i in remaining_ids],
        restored=[_ref(by_id[i]) for i in restored_ids],
    )
    await uow.enqueue(
        [ContactUnmerged(source="matcher", correlation_id=f"unmerge-{merge.id}", data=data)]
    )
    metrics.UNMERGES.inc()
    return data


def _choose(identity: IdentityRow, merges: Sequence[MergeRow], merge_id: UUID | None) -> MergeRow:
    if merge_id is not None:
        named = [m for m in merges if m.id == merge_id]
        if not named:
            raise UnmergeRefused(f"merge {merge_id} is not an active merge of this contact")
        return named[0]
    brought = [m for m in merges if identity.id in m.identity_ids]
    if brought:
        return brought[0]
    if len(merges) == 1:
        return merges[0]
    if not merges:
        raise UnmergeRefused("this identity's contact has no merge to undo")
    raise UnmergeRefused(
        "this identity's contact absorbed several others; name one with --merge: "
        + ", ".join(str(m.id) for m in merges)
    )


def _ref(identity: IdentityRow) -> ContactRef:
    return ContactRef(source=identity.source, external_id=identity.external_id)
