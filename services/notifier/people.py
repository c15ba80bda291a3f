"""What the notifier does when a person opts out (ingest's POST .../opt-out, or its own
unsubscribe coming back) or is erased (DELETE /v1/contacts/...): one transaction per person."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.events import ContactErased, ContactMerged, ContactOptedOut, EventBatch
from shared.metrics import EVENTS_CONSUMED

if TYPE_CHECKING:
    from services.notifier.answers import Answers
    from services.notifier.store.uow import NotifierStore


class PeopleRequests:
    def __init__(self, store: NotifierStore, answers: Answers) -> None:
        self._store = store
        self._answers = answers

    async def apply(self, batch: EventBatch) -> None:
        """Both are idempotent (a redelivery changes nothing more), so no inbox row is needed."""
        for event in batch.events:
            ref = (event.data.source, event.data.external_id)  # type: ignore[union-attr]
            async with self._store.unit_of_work() as uow:
                await uow.people.lock_person(*ref)
                if isinstance(event, ContactOptedOut):
                    if await uow.people.erased([ref]):
                        continue  # storing the opt-out would store the erased person's id
                    # Stored so that deliveries not sent yet and proposals still to come
                    # (the matcher may have proposed them before it heard) send nothing.
                    await uow.people.opt_out(*ref)
                    await self._answers.withdraw(uow, *ref)
                elif isinstance(event, ContactErased):
                    await self._answers.withdraw(uow, *ref)
                    await uow.people.erase(*ref, erased_at=event.occurred_at)
                else:
                    raise ValueError(f"the notifier does not handle {event.type} here")
        EVENTS_CONSUMED.labels("notifier", batch.type, "processed").inc(len(batch.events))

    async def apply_merges(self, batch: EventBatch) -> None:
        """Identity resolution found two identities to be one person: an introduction still
        open between them would introduce the person to themselves, so the merged side's seat
        is withdrawn (as a decline, which tells nobody who). An unmerge changes nothing here:
        what was withdrawn stays withdrawn."""
        for event in batch.events:
            if not isinstance(event, ContactMerged):
                continue
            into = {(r.source, r.external_id) for r in event.data.into}
            async with self._store.unit_of_work() as uow:
                for ref in event.data.merged:
                    await self._answers.withdraw(uow, ref.source, ref.external_id, only_with=into)
        EVENTS_CONSUMED.labels("notifier", batch.type, "processed").inc(len(batch.events))
