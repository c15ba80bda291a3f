"""A person's preferences: the page's pure decisions (services/notifier/preferences.py), the
personal weekly cap (services/matcher/availability.py), the signed link and the footer link in
every message, and what the matcher reads from the event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.matcher.availability import may_take_another, personal_cap
from services.matcher.preferences import change_of
from services.matcher.store.rows import Availability
from services.notifier.links import InvalidLink, LinkAction, LinkKeyring, LinkMaker
from services.notifier.preferences import Current, decide, long_date, page_language, pause_end
from shared.events import ContactPreferencesChanged, PreferencesData, decode_event, encode_event

NOW = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)
CAP = 3


def test_pausing_for_two_weeks_ends_two_weeks_from_now() -> None:
    decision = decide({"pause": "2"}, Current(), NOW, CAP)
    assert decision.changes == {"paused_until": NOW + timedelta(weeks=2)}


@pytest.mark.parametrize("weeks", [1, 2, 4])
def test_every_offered_pause_is_taken(weeks: int) -> None:
    assert pause_end(str(weeks), "", NOW) == NOW + timedelta(weeks=weeks)


def test_a_pause_until_a_day_ends_at_its_start_and_a_date_alone_means_until() -> None:
    expected = datetime(2027, 4, 2, tzinfo=UTC)
    assert decide({"pause": "until", "until": "2027-04-02"}, Current(), NOW, CAP).changes == {
        "paused_until": expected
    }
    assert decide({"pause": "keep", "until": "2027-04-02"}, Current(), NOW, CAP).changes == {
        "paused_until": expected
    }


@pytest.mark.parametrize(
    ("until", "error"),
    [
        ("2027-02-01", "pause_date_past"),
        ("2029-01-01", "pause_date_far"),
        ("soon", "pause_date_invalid"),
    ],
)
def test_a_bad_pause_date_refuses_the_whole_form(until: str, error: str) -> None:
    decision = decide({"pause": "until", "until": until, "language": "de"}, Current(), NOW, CAP)
    assert decision.errors == {"pause": error} and decision.changes == {}


def test_ending_a_pause_is_a_change_only_while_paused() -> None:
    paused = Current(paused_until=NOW + timedelta(days=3))
    assert decide({"pause": "none"}, paused, NOW, CAP).changes == {"paused_until": None}
    assert decide({"pause": "none"}, Current(), NOW, CAP).changes == {}


def test_the_weekly_cap_is_one_up_to_the_operators_and_the_operators_means_none() -> None:
    assert decide({"per_week": "1"}, Current(), NOW, CAP).changes == {"cap_per_week": 1}
    assert decide({"per_week": "3"}, Current(cap_per_week=1), NOW, CAP).changes == {
        "cap_per_week": None
    }
    assert decide({"per_week": ""}, Current(), NOW, CAP).changes == {}
    for bad in ("4", "0", "-1", "x"):
        assert decide({"per_week": bad}, Current(), NOW, CAP).errors == {
            "per_week": "per_week_invalid"
        }


def test_language_is_one_the_notifier_ships() -> None:
    assert decide({"language": "de"}, Current(), NOW, CAP).changes == {"language": "de"}
    assert decide({"language": "de"}, Current(language="de"), NOW, CAP).changes == {}
    assert decide({"language": "fr"}, Current(), NOW, CAP).errors == {
        "language": "language_invalid"
    }


def test_saving_the_page_untouched_changes_nothing() -> None:
    form = {"pause": "keep", "until": "", "per_week": "", "language": "en"}
    assert decide(form, Current(language="en"), NOW, CAP).changes == {}


def test_opting_back_in_is_its_own_choice_recorded_with_its_time() -> None:
    assert decide({"opt_in": "yes"}, Current(opted_out=True), NOW, CAP).changes == {"opted_in": NOW}
    assert decide({"opt_in": "yes"}, Current(), NOW, CAP).changes == {}  # not opted out
    # The settings form never opts anyone back in.
    assert "opted_in" not in decide({"pause": "1"}, Current(opted_out=True), NOW, CAP).changes


def test_page_language_and_dates() -> None:
    assert page_language("de", "en-GB,en") == "de"
    assert page_language(None, "fr-FR, de-AT;q=0.8, en;q=0.5") == "de"
    assert page_language(None, None) == "en"
    assert long_date(NOW, "en") == "1 March 2027"
    assert long_date(NOW, "de") == "1. März 2027"


def test_the_personal_cap_never_exceeds_the_operators() -> None:
    assert personal_cap(2, None) == 2
    assert personal_cap(2, 1) == 1
    assert personal_cap(2, 5) == 2
    one_this_week = Availability(1, False, True, None, own_cap_per_week=1)
    assert not may_take_another(one_this_week, NOW, 2)
    assert may_take_another(Availability(1, False, True, None), NOW, 2)


def test_a_preferences_link_is_its_own_action_and_lasts_thirty_days() -> None:
    keyring = LinkKeyring.single(b"k" * 32)
    url = LinkMaker("https://roac.example", keyring).preferences("crm", "42", NOW.timestamp())
    assert url.startswith("https://roac.example/preferences/")
    token = url.rsplit("/", 1)[1]
    claim = keyring.verify(token, NOW.timestamp())
    assert claim.action is LinkAction.PREFERENCES and claim.external_id == "42"
    with pytest.raises(InvalidLink, match="expired"):
        keyring.verify(token, (NOW + timedelta(days=31)).timestamp())


def test_the_event_carries_only_what_changed_and_the_matcher_reads_it_so() -> None:
    event = ContactPreferencesChanged(
        source="notifier",
        correlation_id="preferences-1",
        occurred_at=NOW,
        data=PreferencesData(
            source="crm", external_id="42", changed=["paused_until", "opted_in"],
            paused_until=NOW + timedelta(weeks=2), opted_in_at=NOW,
        ),
    )  # fmt: skip
    decoded = decode_event(encode_event(event))
    assert isinstance(decoded, ContactPreferencesChanged)
    change = change_of(decoded)
    assert change.pause and change.paused_until == NOW + timedelta(weeks=2)
    assert change.opt_in and change.opted_in_at == NOW
    assert not change.cap and not change.language_changed
