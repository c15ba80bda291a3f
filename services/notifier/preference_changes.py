"""A person's preferences page, its use cases: read what they chose (GET) and change it (POST),
each one transaction of the notifier's own tables.

A change is recorded in `notifier.preferences` (and an opt-in removes their opt-out) and
published as one `contact.preferences_changed.v1` through the notifier's outbox in the same
transaction; the matcher applies it to its own tables. An interest added, re-kinded or removed
is published as the ordinary `interest.declared.v1` / `interest.withdrawn.v1` with the person as
their own source (the matcher applies them like an integration's), and remembered on the
person's row to be shown until the matcher has applied it (preferences_interests.py). Their
channels and interests are read back from the matcher (preferences_held.py), never from its
tables. The token is a signed link of action `preferences` (services/notifier/links.py); any
other link, a forged or an expired one is refused. An erased person's page shows nothing and
changes nothing: no row, no event.

A change made for the person elsewhere (ingest's `POST /v1/contacts/.../preferences`, on their
behalf) comes as the same event and is recorded here too (`apply`), so their page shows it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from services.notifier.clock import Clock
from services.notifier.links import InvalidLink, LinkAction, LinkClaim, LinkKeyring
from services.notifier.preferences import Current, Decision, changes_from_event, decide
from services.notifier.preferences_held import Held, MatcherReadBack
from services.notifier.preferences_interests import (
    InterestChange,
    ShownInterest,
    decide_interest,
    recent,
    shown_interests,
)
from shared.events import (
    ContactPreferencesChanged,
    Event,
    EventBatch,
    InterestData,
    InterestDeclared,
    InterestWithdrawalData,
    InterestWithdrawn,
    PreferencesData,
)
from shared.metrics import EVENTS_CONSUMED

if TYPE_CHECKING:
    from services.notifier.store.uow import NotifierStore, NotifierUnitOfWork


class Refusal(StrEnum):
    INVALID = "invalid"  # malformed, forged, or a link for something else
    EXPIRED = "expired"
    ERASED = "erased"  # shows nothing, says nothing about erasure


@dataclass(frozen=True)
class Person:
    source: str
    external_id: str
    current: Current
    # What the matcher holds (channels, interests); None when it could not be read.
    held: Held | None = None
    interests: list[ShownInterest] = field(default_factory=list)


class PreferenceChanges:
    def __init__(
        self,
        store: NotifierStore,
        *,
        keyring: LinkKeyring,
        clock: Clock,
        operator_cap: int,
        read_back: MatcherReadBack | None = None,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self.operator_cap = operator_cap
        self._read_back = read_back or MatcherReadBack("", "")

    def now(self) -> datetime:
        return self._clock.now()

    def _claim(self, token: str) -> LinkClaim | Refusal:
        try:
            claim = self._keyring.verify(token, self._clock.now().timestamp())
        except InvalidLink as exc:
            return Refusal.EXPIRED if str(exc) == "expired" else Refusal.INVALID
        if claim.action is not LinkAction.PREFERENCES:
            return Refusal.INVALID
        return claim

    async def read(self, token: str) -> Person | Refusal:
        claim = self._claim(token)
        if isinstance(claim, Refusal):
            return claim
        ref = (claim.source, claim.external_id)
        async with self._store.unit_of_work() as uow:
            if await uow.people.erased([ref]):
                return Refusal.ERASED
            current = await uow.preferences.current(*ref)
        return self._person(ref, current, await self._read_back.held(*ref))

    def _person(self, ref: tuple[str, str], current: Current, held: Held | None) -> Person:
        interests = shown_interests(
            held.interests if held else [], current.interest_changes, self._clock.now()
        )
        return Person(*ref, current, held, interests)

    async def change(self, token: str, form: dict[str, str]) -> tuple[Person, Decision] | Refusal:
        """Decide on the form and apply what changes; the person as they are afterwards."""
        claim = self._claim(token)
        if isinstance(claim, Refusal):
            return claim
        ref = (claim.source, claim.external_id)
        now = self._clock.now()
        # Read before the transaction: no lock is held while the matcher is asked.
        held = await self._read_back.held(*ref)
        async with self._store.unit_of_work() as uow:
            # Serialised with their unsubscribe and erasure (the tombstone is seen after it).
            await uow.people.lock_person(*ref)
            if await uow.people.erased([ref]):
                return Refusal.ERASED
            current = await uow.preferences.current(*ref)
            if "interest_action" in form:
                decision = await self._change_interests(uow, ref, form, current, held, now)
            else:
                known = held.channel_types if held else None
                decision = decide(form, current, now, self.operator_cap, known)
                if decision.changes:
                    await uow.preferences.save(*ref, decision.changes)
                    await uow.outbox.enqueue([_event(ref, decision, now)])
            if decision.changes:
                current = await uow.preferences.current(*ref)
        return self._person(ref, current, held), decision

    async def _change_interests(
        self,
        uow: NotifierUnitOfWork,
        ref: tuple[str, str],
        form: dict[str, str],
        current: Current,
        held: Held | None,
        now: datetime,
    ) -> Decision:
        shown = shown_interests(held.interests if held else [], current.interest_changes, now)
        decided = decide_interest(form, shown, now)
        if decided.changes:
            kept = recent([*current.interest_changes, *decided.changes], now)
            await uow.preferences.save_interest_changes(*ref, kept)
            await uow.outbox.enqueue([_interest_event(ref, c) for c in decided.changes])
        changes = {"interests": [c.as_json() for c in decided.changes]} if decided.changes else {}
        return Decision(changes, decided.errors)

    async def apply(self, batch: EventBatch) -> None:
        """contact.preferences_changed.v1 made elsewhere (ingest's POST .../preferences, on the
        person's behalf): recorded so that their page shows it (`changes_from_event` says what
        of it, and skips the notifier's own). One transaction per person; a redelivery
        records the same values again."""
        for event in batch.events:
            if not isinstance(event, ContactPreferencesChanged):
                raise ValueError(f"the notifier does not handle {event.type} here")
            if not changes_from_event(event, None):
                continue  # its own: recorded with its outbox row already
            ref = (event.data.source, event.data.external_id)
            async with self._store.unit_of_work() as uow:
                # Serialised with the page's own changes, the unsubscribe and erasure.
                await uow.people.lock_person(*ref)
                if await uow.people.erased([ref]):
                    continue  # a row would store the erased person's id again
                changes = changes_from_event(event, await uow.preferences.updated_at(*ref))
                if changes:
                    await uow.preferences.save(*ref, changes, at=event.occurred_at)
        EVENTS_CONSUMED.labels("notifier", batch.type, "processed").inc(len(batch.events))


def _event(ref: tuple[str, str], decision: Decision, now: datetime) -> ContactPreferencesChanged:
    changes = decision.changes
    opted_in = changes.get("opted_in")
    return ContactPreferencesChanged(
        source="notifier",
        occurred_at=now,
        # Opaque: a correlation id is logged and travels in headers.
        correlation_id=f"preferences-{uuid.uuid4()}",
        data=PreferencesData(
            source=ref[0],
            external_id=ref[1],
            changed=decision.changed,
            paused_until=changes.get("paused_until"),
            cap_per_week=changes.get("cap_per_week"),
            language=changes.get("language"),
            opted_in_at=opted_in if isinstance(opted_in, datetime) else None,
            cap_per_month=changes.get("cap_per_month"),
            channel_order=changes.get("channel_order"),
        ),
    )


def _interest_event(ref: tuple[str, str], change: InterestChange) -> Event:
    """The ordinary interest event, the person their own source (`data`), the notifier its
    producer (the envelope's `source`)."""
    correlation_id = f"preferences-{uuid.uuid4()}"
    if change.withdrawn:
        return InterestWithdrawn(
            source="notifier",
            occurred_at=change.at,
            correlation_id=correlation_id,
            data=InterestWithdrawalData(
                source=ref[0], external_id=ref[1], topic=change.topic, kind=change.kind
            ),
        )
    return InterestDeclared(
        source="notifier",
        occurred_at=change.at,
        correlation_id=correlation_id,
        data=InterestData(source=ref[0], external_id=ref[1], topic=change.topic, kind=change.kind),
    )
