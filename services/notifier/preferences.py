"""What a person's preferences page decides: plain Python, no I/O.

The page (services/notifier/preferences_routes.py) posts a form; `decide` turns it, with what
is stored for the person and the moment, into the fields that change (those a
`contact.preferences_changed.v1` carries) or the reasons it is refused. Nothing that does not
change is sent, so saving the page untouched publishes nothing.

- **Pause**: for 1, 2 or 4 weeks from now, or until a chosen day (its start, UTC), at most a
  year ahead; or end a pause now. "No change" keeps whatever is set.
- **How often**: at most N introductions a week, 1 up to the operator's cap
  (ROAC_MATCH_CAP_PER_WEEK); empty means the operator's cap. And at most N a month (a rolling
  30 days), 1 up to four times the operator's weekly cap; empty means no monthly cap. Both hold
  together, so neither ever lets anyone above the operator's cap.
- **Channels**: the order of the channel types roac knows for them (`channel_1`, `channel_2`,
  ...: each once); their messages go by the first, fallbacks follow the order.
- **Language**: one the notifier ships templates for.
- **Opting back in** after unsubscribing: its own button, its own explicit choice.

A change made for them elsewhere (ingest's `POST /v1/contacts/.../preferences`, on their
behalf) reaches the page as the same event: `changes_from_event` says what of it is recorded.

Their interests have their own forms and decisions: services/notifier/preferences_interests.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from shared.events import ChannelType, ContactPreferencesChanged

# The languages a person can choose (the notifier's shipped templates), with their own names.
LANGUAGES: dict[str, str] = {"en": "English", "de": "Deutsch"}
PAUSE_WEEKS = (1, 2, 4)
MAX_PAUSE = timedelta(days=366)
# The monthly caps offered go up to this many times the operator's weekly cap: a rolling month
# holds at least four weeks, so a higher one would never bind before the weekly cap does.
WEEKS_PER_MONTH = 4


@dataclass(frozen=True)
class Current:
    """What the notifier holds for the person (its own preferences row and opt-outs)."""

    paused_until: datetime | None = None
    cap_per_week: int | None = None
    language: str | None = None
    opted_out: bool = False
    opted_in_at: datetime | None = None
    cap_per_month: int | None = None
    # Their channel types, first choice first; None: the integration's order.
    channel_order: tuple[ChannelType, ...] | None = None
    # The interest changes they made on the page (preferences_interests.InterestChange).
    interest_changes: tuple[Any, ...] = ()

    def paused(self, now: datetime) -> bool:
        return self.paused_until is not None and self.paused_until > now


@dataclass(frozen=True)
class Decision:
    """The fields that change (named as in `PreferencesData.changed`) and their new values, or
    the errors (field name: message key) that refuse the whole form."""

    changes: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> list[str]:
        return list(self.changes)


def pause_end(choice: str, until: str, now: datetime) -> datetime | str | None:
    """When a pause chosen on the form ends: a moment, None (not paused), or an error key."""
    if choice == "none":
        return None
    if choice in {str(w) for w in PAUSE_WEEKS}:
        return now + timedelta(weeks=int(choice))
    if choice == "until":
        try:
            day = date.fromisoformat(until.strip())
        except ValueError:
            return "pause_date_invalid"
        end = datetime.combine(day, time(0), tzinfo=UTC)
        if end <= now:
            return "pause_date_past"
        if end - now > MAX_PAUSE:
            return "pause_date_far"
        return end
    return "pause_invalid"


def cap_choices(operator_cap: int) -> list[int]:
    """The weekly caps a person may choose: 1 up to the operator's."""
    return list(range(1, operator_cap + 1))


def month_cap_choices(operator_cap: int) -> list[int]:
    """The monthly caps a person may choose: 1 up to four times the operator's weekly cap."""
    return list(range(1, operator_cap * WEEKS_PER_MONTH + 1))


def effective_order(
    known: Sequence[ChannelType], chosen: Sequence[ChannelType] | None
) -> list[ChannelType]:
    """The channel types roac knows for the person (each once, in the integration's order),
    ranked by their own order when they chose one: what the page's selects show."""
    distinct = list(dict.fromkeys(known))
    if not chosen:
        return distinct
    rank = {kind: i for i, kind in enumerate(chosen)}
    return sorted(distinct, key=lambda kind: rank.get(kind, len(rank)))


def channel_order(
    form: Mapping[str, str], known: Sequence[ChannelType] | None
) -> list[ChannelType] | str | None:
    """The order posted as `channel_1`, `channel_2`, ... (None when the form has none), or an
    error key: each a channel type roac knows for them (any type when that could not be read),
    each at most once."""
    ranks = sorted(
        (int(key.removeprefix("channel_")), value.strip())
        for key, value in form.items()
        if key.startswith("channel_") and key.removeprefix("channel_").isdigit()
    )
    if not ranks:
        return None
    allowed = {kind.value for kind in (known if known is not None else ChannelType)}
    values = [value for _, value in ranks]
    if any(value not in allowed for value in values) or len(set(values)) != len(values):
        return "channel_order_invalid"
    return [ChannelType(value) for value in values]


def _cap(raw: str, choices: list[int]) -> int | str | None:
    """A cap chosen from a list: None for empty, the number, or "invalid"."""
    raw = raw.strip()
    if raw == "":
        return None
    if raw.isdigit() and int(raw) in choices:
        return int(raw)
    return "invalid"


def decide(
    form: Mapping[str, str],
    current: Current,
    now: datetime,
    operator_cap: int,
    known_channels: Sequence[ChannelType] | None = None,
) -> Decision:
    """The settings form (`pause`, `until`, `per_week`, `per_month`, `channel_<rank>`,
    `language`) or the opt-in form (`opt_in`), against what is stored. `known_channels`: the
    channel types roac holds for them, when the matcher could be asked."""
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if form.get("opt_in") == "yes":
        if current.opted_out:
            changes["opted_in"] = now
        return Decision(changes, errors)

    choice = form.get("pause", "keep")
    if choice == "keep" and form.get("until", "").strip():
        choice = "until"  # a date picked without ticking "until": what they meant
    if choice != "keep":
        end = pause_end(choice, form.get("until", ""), now)
        if isinstance(end, str):
            errors["pause"] = end
        elif end is not None or current.paused(now):
            changes["paused_until"] = end

    if "per_week" in form:
        cap = _cap(form["per_week"], cap_choices(operator_cap))
        if cap == "invalid":
            errors["per_week"] = "per_week_invalid"
        else:
            # Choosing the operator's cap itself is the same as no cap of one's own.
            cap = None if cap == operator_cap else cap
            if cap != current.cap_per_week:
                changes["cap_per_week"] = cap

    if "per_month" in form:
        month = _cap(form["per_month"], month_cap_choices(operator_cap))
        if month == "invalid":
            errors["per_month"] = "per_month_invalid"
        elif month != current.cap_per_month:
            changes["cap_per_month"] = month

    order = channel_order(form, known_channels)
    if isinstance(order, str):
        errors["channel_order"] = order
    elif order is not None and order != effective_order(
        known_channels or order, current.channel_order
    ):
        # Saved only when it differs from the order the page showed (theirs, or else the
        # integration's): an untouched page changes nothing.
        changes["channel_order"] = order

    if "language" in form:
        language = form["language"].strip()
        if language not in LANGUAGES:
            errors["language"] = "language_invalid"
        elif language != current.language:
            changes["language"] = language

    if errors:
        return Decision({}, errors)
    return Decision(changes, errors)


def changes_from_event(
    event: ContactPreferencesChanged, updated_at: datetime | None
) -> dict[str, Any]:
    """What a contact.preferences_changed.v1 changes in the notifier's own record of the person
    (what their page shows), named as `decide` names them: the fields the event names in
    `changed`, nothing else. Nothing at all when the notifier produced it (its own page's
    change is recorded in the same transaction as its outbox row, and applying the echo later
    could undo a newer change made since), or when it occurred before the record's last change
    (`updated_at`): never older over newer."""
    if event.source == "notifier":
        return {}
    if updated_at is not None and event.occurred_at < updated_at:
        return {}
    data = event.data
    values: dict[str, Any] = {
        "paused_until": data.paused_until,
        "cap_per_week": data.cap_per_week,
        "cap_per_month": data.cap_per_month,
        "language": data.language,
        "channel_order": list(data.channel_order) if data.channel_order else None,
        "opted_in": data.opted_in_at or event.occurred_at,
    }
    return {name: values[name] for name in data.changed}


def page_language(stored: str | None, accept_language: str | None) -> str:
    """The page's language: the person's chosen one, else the first of the browser's that the
    notifier ships, else English."""
    if stored in LANGUAGES:
        return stored
    for part in (accept_language or "").split(","):
        tag = part.split(";", 1)[0].strip().lower()
        base = tag.split("-", 1)[0]
        if base in LANGUAGES:
            return base
    return "en"


_MONTHS = {
    "en": [
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ],
    "de": [
        "Januar", "Februar", "März", "April", "Mai", "Juni",
        "Juli", "August", "September", "Oktober", "November", "Dezember",
    ],
}  # fmt: skip


def long_date(moment: datetime, language: str) -> str:
    """`12 March 2027` / `12. März 2027` (UTC)."""
    day = moment.astimezone(UTC)
    month = _MONTHS.get(language, _MONTHS["en"])[day.month - 1]
    if language == "de":
        return f"{day.day}. {month} {day.year}"
    return f"{day.day} {month} {day.year}"
