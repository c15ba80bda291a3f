"""Every row type the matcher's store reads and writes: plain frozen dataclasses, no I/O.

The records (`contacts.py`, `topics.py`, `proposals.py`, `rounds.py`, `resources.py`,
`identities.py`, `erasure.py`) take and return these; use cases build them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from shared.events import ChannelAddress, InterestKind

# A person as an integration knows them: (source, external_id).
Ref = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ProfileRow:
    contact_id: int
    name: str
    organization: str | None
    timezone: str | None
    channels: list[ChannelAddress]
    profile_at: datetime
    tags: tuple[str, ...] = ()
    snoozed_until: datetime | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class InterestRow:
    contact_id: int
    topic_id: int
    kind: InterestKind
    weight: float
    declared_at: datetime
    # The identity that declared it (an unmerge gives each side back its own interests).
    identity_id: int | None = None


@dataclass(frozen=True, slots=True)
class WithdrawalRow:
    """An identity's interest withdrawn (`interest.withdrawn.v1`), one kind of one topic."""

    contact_id: int
    identity_id: int
    topic: str
    kind: InterestKind
    withdrawn_at: datetime


class Resolved(NamedTuple):
    contact_id: int
    identity_id: int


@dataclass(frozen=True, slots=True)
class ProposalRow:
    id: UUID
    group_key: str
    contact_ids: tuple[int, ...]
    score: float
    reason: str
    topics: list[dict[str, Any]]
    correlation_id: str
    round_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class PoolRow:
    name: str
    selector: dict[str, list[str]]
    group_size: int
    serendipity: float
    rules: dict[str, str]
    every_seconds: int | None
    next_round_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # A calendar schedule (services/matcher/schedules.py, WeeklySchedule.to_json) instead of
    # every_seconds; at most one of the two is set.
    schedule: dict[str, Any] | None = None
    # Days after its introductions that the notifier asks "did you meet?" (None: its default).
    checkin_after_days: int | None = None


@dataclass(frozen=True, slots=True)
class ScheduledRound:
    """A due pool's round to request, and when the pool's next one is due."""

    pool: PoolRow
    seed: int
    next_round_at: datetime | None


@dataclass(frozen=True, slots=True)
class RoundRow:
    id: UUID
    pool: str
    group_size: int
    seed: int
    serendipity: float
    dry_run: bool
    status: str
    worker: UUID | None
    attempts: int
    stats: dict[str, Any] | None
    plan: list[dict[str, Any]] | None
    error: str | None
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A pool member as a round sees it."""

    id: int
    organization: str | None
    timezone: str | None
    snoozed_until: datetime | None
    last_introduced_at: datetime | None
    opted_out: bool = False  # listed as left out, never placed
    deliverable: bool = True


@dataclass(frozen=True, slots=True)
class Availability:
    """A contact's state read under its row lock, just before a proposal is written
    (`availability.Standing`: what `availability.within_cap` decides on)."""

    recent_intros: int
    opted_out: bool
    deliverable: bool
    snoozed_until: datetime | None
    own_cap_per_week: int | None = None  # the person's own cap (preferences page)
    own_cap_per_month: int | None = None  # their own monthly cap (preferences page)
    month_intros: int = 0  # introductions within availability.ROLLING_MONTH (when capped)


@dataclass(frozen=True, slots=True)
class PreferenceChange:
    """What one contact.preferences_changed.v1 sets on a contact row (each flag: that field
    changed)."""

    at: datetime
    pause: bool = False
    paused_until: datetime | None = None
    cap: bool = False
    cap_per_week: int | None = None
    language_changed: bool = False
    language: str | None = None
    opt_in: bool = False
    opted_in_at: datetime | None = None
    cap_month: bool = False
    cap_per_month: int | None = None
    channels: bool = False  # their channel order changed
    channel_order: tuple[str, ...] = ()  # channel types, first choice first; empty: none


class OwnCaps(NamedTuple):
    """A person's own caps (preferences page) and what the monthly one counts, for planning."""

    per_week: int | None
    per_month: int | None
    month_intros: int


class TopicCounts(NamedTuple):
    """A topic as stored: `scoring.topic_stats` turns it into what scoring weighs."""

    name: str
    people: int
    meetings: int


@dataclass(frozen=True, slots=True)
class HeldTopic:
    """One person's interest in one of a resource's topics."""

    contact_id: int
    topic_id: int
    weight: float
    declared_at: datetime


@dataclass(frozen=True, slots=True)
class IdentityProfile:
    identity_id: int
    profile: dict[str, Any]  # the identity's last ContactData, as JSON
    profile_at: datetime


@dataclass(frozen=True, slots=True)
class MergeRow:
    id: UUID
    survivor_id: int
    absorbed_id: int
    identity_ids: tuple[int, ...]
    matched_on: str
    proposal_ids: tuple[UUID, ...]
    merged_at: datetime
    undone_at: datetime | None
    # same_source, verified_sources, or unrecorded (merged before reasons were kept).
    reason: str = "unrecorded"
    # The sources of the two identities that shared the key (survivor's side first).
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IdentityRow:
    id: int
    source: str
    external_id: str
    contact_id: int
    opted_out: bool
    profile: dict[str, Any] | None
    profile_at: datetime | None
