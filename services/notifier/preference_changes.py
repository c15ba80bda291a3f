"""A person's preferences page, its use cases: read what they chose (GET) and change it (POST),
each one transaction of the notifier's own tables.

A change is recorded in `notifier.preferences` (and an opt-in removes their opt-out) and
published as one `contact.preferences_changed.v1` through the notifier's outbox in the same
transaction; the matcher applies it to its own tables. The token is a signed link of action
`preferences` (services/notifier/links.py); any other link, a forged or an expired one is
refused. An erased person's page shows nothing and changes nothing: no row, no event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from services.notifier.clock import Clock
from services.notifier.links import InvalidLink, LinkAction, LinkClaim, LinkKeyring
from services.notifier.preferences import Current, Decision, decide
from shared.events import ContactPreferencesChanged, PreferencesData

if TYPE_CHECKING:
    from services.notifier.store.uow import NotifierStore


class Refusal(StrEnum):
    INVALID = "invalid"  # malformed, forged, or a link for something else
    EXPIRED = "expired"
    ERASED = "erased"  # shows nothing, says nothing about erasure


@dataclass(frozen=True)
class Person:
    source: str
    external_id: str
    current: Current


class PreferenceChanges:
    def __init__(
        self, store: NotifierStore, *, keyring: LinkKeyring, clock: Clock, operator_cap: int
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self.operator_cap = operator_cap

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
            return Person(*ref, await uow.preferences.current(*ref))

    async def change(self, token: str, form: dict[str, str]) -> tuple[Person, Decision] | Refusal:
        """Decide on the form and apply what changes; the person as they are afterwards."""
        claim = self._claim(token)
        if isinstance(claim, Refusal):
            return claim
        ref = (claim.source, claim.external_id)
        now = self._clock.now()
        async with self._store.unit_of_work() as uow:
            # Serialised with their unsubscribe and erasure (the tombstone is seen after it).
            await uow.people.lock_person(*ref)
            if await uow.people.erased([ref]):
                return Refusal.ERASED
            current = await uow.preferences.current(*ref)
            decision = decide(form, current, now, self.operator_cap)
            if decision.changes:
                await uow.preferences.save(*ref, decision.changes)
                await uow.outbox.enqueue([_event(ref, decision, now)])
                current = await uow.preferences.current(*ref)
            return Person(*ref, current), decision


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
        ),
    )
