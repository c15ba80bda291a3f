"""A person's own preferences (contact.preferences_changed.v1, from the notifier's preferences
page) applied to their contact: a pause (`snoozed_until`), their weekly and monthly caps (used
by `availability.may_take_another`), their language, the order of their channels (their
introductions present them so: `store.contacts.participant_rows`), and opting back in after
unsubscribing. Interests they add or remove on the page come as the ordinary interest events.

Each event names the identity (source, external_id) the person was reached under; the change
applies to the contact that identity belongs to. Events of people erased after they occurred
change nothing, and an older event arriving after a newer one is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from services.matcher.store.rows import PreferenceChange
from shared.events import ContactPreferencesChanged, PreferencesData

if TYPE_CHECKING:
    from services.matcher.store import MatcherUnitOfWork

log = logging.getLogger("roac.matcher")


def change_of(event: ContactPreferencesChanged) -> PreferenceChange:
    """What the event sets, field by field (only those it names in `changed`)."""
    data: PreferencesData = event.data
    changed = set(data.changed)
    opt_in = "opted_in" in changed
    return PreferenceChange(
        at=event.occurred_at,
        pause="paused_until" in changed,
        paused_until=data.paused_until,
        cap="cap_per_week" in changed,
        cap_per_week=data.cap_per_week,
        language_changed="language" in changed,
        language=data.language,
        opt_in=opt_in,
        opted_in_at=(data.opted_in_at or event.occurred_at) if opt_in else None,
        cap_month="cap_per_month" in changed,
        cap_per_month=data.cap_per_month,
        channels="channel_order" in changed,
        channel_order=tuple(kind.value for kind in data.channel_order or ()),
    )


async def apply_preferences(
    uow: MatcherUnitOfWork, events: Sequence[ContactPreferencesChanged]
) -> int:
    """Apply the events in the order they occurred; return how many changed a contact."""
    ordered = sorted(events, key=lambda e: e.occurred_at)
    refs = [((e.data.source, e.data.external_id), e.occurred_at) for e in ordered]
    erased = await uow.erasure.erased_refs(refs)
    known = await uow.identities.known(ref for ref, _ in refs)
    contact_ids = sorted({known[ref].contact_id for ref, _ in refs if ref in known})
    await uow.contacts.lock_availability(contact_ids)  # in id order, like every writer
    applied = 0
    for event in ordered:
        ref = (event.data.source, event.data.external_id)
        if ref in erased:
            log.info("dropped %s of an erased person", event.type)
            continue
        found = known.get(ref)
        if found is None:
            log.info("dropped %s of an unknown person", event.type)
            continue
        if await uow.contacts.apply_preferences(found.contact_id, change_of(event)):
            applied += 1
    return applied
