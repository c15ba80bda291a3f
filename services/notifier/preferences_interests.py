"""A person's interests on their preferences page, as plain Python: what the page shows and
what its interest forms change. No I/O.

The matcher holds interests; the page reads them back from it (services/notifier/
preferences_held.py) and changes them only by publishing the ordinary interest events, with the
person as their own source: `interest.declared.v1` to add one or give it another kind,
`interest.withdrawn.v1` to remove one (services/notifier/preference_changes.py). Those events
reach the matcher through RabbitMQ a moment later, so the page remembers the changes it made
(`notifier.preferences.interest_changes`) and shows them over what the matcher answered until
the matcher has caught up (`shown_interests`); a change older than `PENDING_FOR` that the
matcher still does not show was superseded (an integration withdrew or declared it since).

The forms: `interest_action=add` with `topic` and `kind`; and per interest shown,
`interest_action=remove` or `change` with its `topic` and `kind`, and `new_kind` for a change
(the matcher keys an interest by topic and kind: another kind is a withdrawal and a declaration).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from shared.events import InterestKind, Topic

# How long a change made on the page is shown over the matcher's answer at most.
PENDING_FOR = timedelta(days=1)
# How many interests the page lists (and lets a person hold through it) at most.
MAX_PAGE_INTERESTS = 100
_TOPIC: TypeAdapter[str] = TypeAdapter(Topic)
_KIND_ORDER = {kind: i for i, kind in enumerate(InterestKind)}


@dataclass(frozen=True)
class HeldInterest:
    """An interest as the matcher holds it (its read-back API)."""

    topic: str
    kind: InterestKind
    declared_at: datetime | None = None


@dataclass(frozen=True)
class InterestChange:
    """One change made on the page: the interest declared (or withdrawn) at `at`."""

    topic: str
    kind: InterestKind
    withdrawn: bool
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "kind": self.kind.value,
            "withdrawn": self.withdrawn,
            "at": self.at.isoformat(),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> InterestChange:
        return cls(
            str(value["topic"]),
            InterestKind(value["kind"]),
            bool(value["withdrawn"]),
            datetime.fromisoformat(str(value["at"])),
        )


@dataclass(frozen=True)
class ShownInterest:
    topic: str
    kind: InterestKind
    pending: bool = False  # changed on the page, not yet applied by the matcher


@dataclass(frozen=True)
class InterestDecision:
    changes: list[InterestChange] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def recent(changes: Iterable[InterestChange], now: datetime) -> list[InterestChange]:
    """The page's changes still worth showing (and keeping), oldest first."""
    return sorted((c for c in changes if now - c.at <= PENDING_FOR), key=lambda c: c.at)


def shown_interests(
    held: Sequence[HeldInterest], changes: Iterable[InterestChange], now: datetime
) -> list[ShownInterest]:
    """What the page lists: the matcher's interests, with the page's recent changes over them
    (a change is newer than what the matcher holds of that topic and kind, or the matcher
    already applied it), by topic and then kind."""
    shown = {(h.topic, h.kind): ShownInterest(h.topic, h.kind) for h in held}
    declared = {(h.topic, h.kind): h.declared_at for h in held}
    for change in recent(changes, now):
        key = (change.topic, change.kind)
        if change.withdrawn:
            since = declared.get(key)
            if since is None or since <= change.at:
                shown.pop(key, None)
        elif key not in shown:
            shown[key] = ShownInterest(change.topic, change.kind, pending=True)
    return sorted(shown.values(), key=lambda i: (i.topic, _KIND_ORDER[i.kind]))


def _topic(raw: str) -> str | None:
    try:
        return _TOPIC.validate_python(raw)
    except ValidationError:
        return None


def _kind(raw: str) -> InterestKind | None:
    try:
        return InterestKind(raw.strip())
    except ValueError:
        return None


def decide_interest(
    form: Mapping[str, str], shown: Sequence[ShownInterest], now: datetime
) -> InterestDecision:
    """An interest form against what the page showed: the changes to publish (none when it
    asks for what already holds), or the errors (field: message key)."""
    action = form.get("interest_action", "")
    topic = _topic(form.get("topic", ""))
    kind = _kind(form.get("kind", ""))
    errors: dict[str, str] = {}
    if topic is None:
        errors["topic"] = "topic_invalid"
    if kind is None:
        errors["kind"] = "kind_invalid"
    if action not in {"add", "remove", "change"}:
        errors["interest_action"] = "interest_action_invalid"
    if errors or topic is None or kind is None:
        return InterestDecision(errors=errors)
    held = {(i.topic, i.kind) for i in shown}
    if action == "add":
        if (topic, kind) in held:
            return InterestDecision()
        if len(held) >= MAX_PAGE_INTERESTS:
            return InterestDecision(errors={"topic": "too_many_interests"})
        return InterestDecision([InterestChange(topic, kind, withdrawn=False, at=now)])
    if (topic, kind) not in held:
        return InterestDecision()  # removed already (a second click, another tab)
    if action == "remove":
        return InterestDecision([InterestChange(topic, kind, withdrawn=True, at=now)])
    new_kind = _kind(form.get("new_kind", ""))
    if new_kind is None:
        return InterestDecision(errors={"kind": "kind_invalid"})
    if new_kind is kind:
        return InterestDecision()
    changes = [InterestChange(topic, kind, withdrawn=True, at=now)]
    if (topic, new_kind) not in held:
        changes.append(InterestChange(topic, new_kind, withdrawn=False, at=now))
    return InterestDecision(changes)
