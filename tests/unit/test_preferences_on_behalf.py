"""Preferences changed on a person's behalf (ingest's POST /v1/contacts/.../preferences, the
console's pause and resume), its pure decisions: which fields a body changes, what the notifier
records of such an event for the person's page (its own events and older ones skipped), and the
day a console pause ends. The route with a fake publisher: tests/unit/test_ingest_routes.py;
the whole path against the live services: tests/e2e/test_pause_on_behalf.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from pydantic import ValidationError

from services.console.people_pages import pause_day, pause_end
from services.ingest.schemas import PreferencesRequest
from services.notifier.preferences import changes_from_event
from shared.events import ContactPreferencesChanged, ContactRef, PreferencesData

PERSON = ContactRef(source="crm", external_id="42")
NOON = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


# The body -> `changed`


def test_changed_names_exactly_the_fields_the_body_sets_nulls_included() -> None:
    assert PreferencesRequest.model_validate({"cap_per_week": 2}).changed() == ["cap_per_week"]
    resume = PreferencesRequest.model_validate({"paused_until": None})
    assert resume.changed() == ["paused_until"]
    everything = PreferencesRequest.model_validate(
        {
            "language": "de",
            "cap_per_month": 3,
            "paused_until": "2027-04-01T00:00:00Z",
            "cap_per_week": None,
        }
    )
    assert everything.changed() == ["paused_until", "cap_per_week", "cap_per_month", "language"]


def test_the_event_data_carries_the_set_fields_and_leaves_the_others_unset() -> None:
    data = PreferencesRequest.model_validate({"paused_until": "2027-04-01T00:00:00+02:00"})
    event_data = data.as_event_data(PERSON)
    assert (event_data.source, event_data.external_id) == ("crm", "42")
    assert event_data.changed == ["paused_until"]
    assert event_data.paused_until == datetime(2027, 3, 31, 22, 0, tzinfo=UTC)
    assert event_data.cap_per_week is None and event_data.language is None


@pytest.mark.parametrize(
    "body",
    [
        {},  # sets nothing
        {"paused_until": "2027-04-01T00:00:00"},  # no time zone: which moment?
        {"cap_per_week": 0},
        {"cap_per_month": 401},
        {"language": "de\n"},  # control characters are refused as everywhere
        {"language": "d\u202ee"},
        {"opted_in_at": "2027-04-01T00:00:00Z"},  # opting in is the person's own click
        {"channel_order": ["email"]},
    ],
)
def test_bodies_that_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PreferencesRequest.model_validate(body)


# What the notifier records of such an event


def _event(
    source: Literal["ingest", "matcher", "notifier"], at: datetime, **fields: Any
) -> ContactPreferencesChanged:
    return ContactPreferencesChanged(
        source=source,
        occurred_at=at,
        correlation_id="c",
        data=PreferencesData(source="crm", external_id="42", changed=list(fields), **fields),
    )


def test_the_notifier_records_only_the_fields_the_event_names() -> None:
    pause = _event("ingest", NOON, paused_until=NOON + timedelta(days=30))
    assert changes_from_event(pause, None) == {"paused_until": NOON + timedelta(days=30)}
    resume = _event("ingest", NOON, paused_until=None)
    assert changes_from_event(resume, NOON - timedelta(seconds=1)) == {"paused_until": None}
    caps = _event("ingest", NOON, cap_per_week=2, language="de")
    assert changes_from_event(caps, NOON) == {"cap_per_week": 2, "language": "de"}


def test_the_notifiers_own_events_are_skipped() -> None:
    """Recorded with their outbox row already; the echo could undo a newer change."""
    own = _event("notifier", NOON, paused_until=NOON + timedelta(days=7))
    assert changes_from_event(own, None) == {}
    assert changes_from_event(own, NOON - timedelta(days=1)) == {}


def test_an_event_older_than_the_record_is_skipped() -> None:
    older = _event("ingest", NOON, paused_until=NOON + timedelta(days=7))
    assert changes_from_event(older, NOON + timedelta(milliseconds=1)) == {}


# The console's pause


def test_a_console_pause_ends_at_the_start_of_the_day_it_confirmed() -> None:
    day = pause_day(NOON)
    assert day.isoformat() == "2027-03-31"
    assert pause_end(day.isoformat(), NOON) == datetime(2027, 3, 31, tzinfo=UTC)
    # A confirmation left open past its day, a forged or missing day: nothing is done.
    assert pause_end("2027-03-01", NOON) is None
    assert pause_end("2029-01-01", NOON) is None
    assert pause_end("", NOON) is None
    assert pause_end("soon", NOON) is None
