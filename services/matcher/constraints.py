"""The rules every introduction obeys, live or in a round: plain Python, no I/O.

Hard rules (always): a person who opted out, is snoozed, or reached a cap (the operator's
weekly one, or their own weekly or monthly one) is not available (that rule lives in
`availability.py`; `own_cap_fields` carries their own caps into `Person`); two people are
never grouped when either blocks the other, when they were already introduced (within the
cooldown, or ever after a decline), or when they are the same contact (merged identities
resolve to one contact id, so that is the id check).

Pool rules, each `required` (a filter), `preferred` (a score penalty) or `off`:
- `different_organization`: not two people of the same organisation (default: required);
- `same_timezone`: people in one time zone (default: off).

Availability is re-checked under the contacts' row locks before a proposal is written
(`store.contacts.ContactRecords.lock_availability`, then `availability.within_cap`), so
concurrent matchers cannot exceed the cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from services.matcher.store.rows import OwnCaps


class RuleLevel(StrEnum):
    REQUIRED = "required"
    PREFERRED = "preferred"
    OFF = "off"


# A preferred rule that is broken multiplies the pair's score by this.
PREFERRED_PENALTY = 0.5


@dataclass(frozen=True, slots=True)
class Rules:
    cap_per_week: int = 2
    different_organization: RuleLevel = RuleLevel.REQUIRED
    same_timezone: RuleLevel = RuleLevel.OFF

    @classmethod
    def from_mapping(cls, cap_per_week: int, rules: Mapping[str, str]) -> Rules:
        unknown = set(rules) - set(RULE_NAMES)
        if unknown:
            raise ValueError(f"unknown rules: {', '.join(sorted(unknown))}")
        return cls(
            cap_per_week=cap_per_week,
            different_organization=RuleLevel(
                rules.get("different_organization", RuleLevel.REQUIRED)
            ),
            same_timezone=RuleLevel(rules.get("same_timezone", RuleLevel.OFF)),
        )


RULE_NAMES = ("different_organization", "same_timezone")


@dataclass(frozen=True, slots=True)
class Person:
    """What the rules need to know about one contact."""

    id: int
    organization: str | None = None
    timezone: str | None = None
    snoozed_until: datetime | None = None
    opted_out: bool = False
    recent_intros: int = 0  # proposals within availability.ROLLING_WEEK
    blocked: frozenset[int] = field(default_factory=frozenset)  # both directions
    met: frozenset[int] = field(default_factory=frozenset)  # not to be grouped again
    # Has a channel. The people matching reads are reachable; the locked re-read checks again.
    deliverable: bool = True
    own_cap_per_week: int | None = None  # the person's own weekly cap (preferences page)
    own_cap_per_month: int | None = None  # and their own monthly cap
    month_intros: int = 0  # proposals within availability.ROLLING_MONTH (when so capped)
    # The organisation compared case- and space-insensitively, computed once (hot in rounds).
    org_key: str = field(init=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "org_key", _norm(self.organization))


class OwnCapFields(TypedDict):
    """`Person`'s fields for the person's own caps (keyword arguments: `**own_cap_fields(...)`)."""

    own_cap_per_week: int | None
    own_cap_per_month: int | None
    month_intros: int


def own_cap_fields(caps: OwnCaps | None) -> OwnCapFields:
    """A person's own caps as `store.contacts.ContactRecords.own_caps` reads them (None: they
    chose none), as `Person`'s fields: rounds and live matching both plan within them, so a
    pair chosen is not dropped at the locked re-check for a cap the plan could have seen."""
    if caps is None:
        return OwnCapFields(own_cap_per_week=None, own_cap_per_month=None, month_intros=0)
    return OwnCapFields(
        own_cap_per_week=caps.per_week,
        own_cap_per_month=caps.per_month,
        month_intros=caps.month_intros,
    )


def _same_organization(a: Person, b: Person) -> bool:
    return bool(a.org_key) and a.org_key == b.org_key


def _norm(text: str | None) -> str:
    return " ".join((text or "").casefold().split())


def forbidden(a: Person, b: Person, rules: Rules) -> bool:
    """Whether a and b must never be in one group."""
    if a.id == b.id or b.id in a.blocked or a.id in b.blocked:
        return True
    if b.id in a.met or a.id in b.met:
        return True
    if rules.different_organization is RuleLevel.REQUIRED and _same_organization(a, b):
        return True
    return (
        rules.same_timezone is RuleLevel.REQUIRED
        and a.timezone is not None
        and b.timezone is not None
        and a.timezone != b.timezone
    )


def preference_factor(a: Person, b: Person, rules: Rules) -> float:
    """Multiplier for a pair's score from the preferred (soft) rules it breaks."""
    factor = 1.0
    if rules.different_organization is RuleLevel.PREFERRED and _same_organization(a, b):
        factor *= PREFERRED_PENALTY
    if (
        rules.same_timezone is RuleLevel.PREFERRED
        and a.timezone is not None
        and b.timezone is not None
        and a.timezone != b.timezone
    ):
        factor *= PREFERRED_PENALTY
    return factor


def waiting_bonus(last_introduced_at: datetime | None, now: datetime) -> float:
    """Score multiplier favouring people who waited longest: 1.0 for someone introduced today,
    rising to 1.5 after four weeks, and 1.5 for someone never introduced."""
    if last_introduced_at is None:
        return 1.5
    days = max((now - last_introduced_at).total_seconds() / 86_400, 0.0)
    return 1.0 + 0.5 * min(days / 28.0, 1.0)
