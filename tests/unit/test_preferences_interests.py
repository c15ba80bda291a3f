"""The preferences page's newer choices as pure decisions: a monthly cap (the page's and the
matcher's availability rule), the order of one's channels (the page's decision and the one
ordering rule both services use), and interests seen, added, re-kinded and removed (what the
page shows over the matcher's answer until the matcher has applied its changes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.matcher.availability import may_take_another, within_cap, within_monthly_cap
from services.matcher.preferences import change_of
from services.matcher.store.rows import Availability
from services.notifier.preferences import (
    Current,
    channel_order,
    decide,
    effective_order,
    month_cap_choices,
)
from services.notifier.preferences_held import held_from
from services.notifier.preferences_interests import (
    PENDING_FOR,
    HeldInterest,
    InterestChange,
    ShownInterest,
    decide_interest,
    recent,
    shown_interests,
)
from services.notifier.preferences_routes import _ENVIRONMENTS
from shared.events import (
    ChannelAddress,
    ChannelType,
    ContactPreferencesChanged,
    InterestKind,
    PreferencesData,
    decode_event,
    encode_event,
    in_preferred_order,
)

NOW = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)
CAP = 3
EMAIL = ChannelType.EMAIL
SLACK = ChannelType.SLACK
HOOK = ChannelType.WEBHOOK
LIKES, SEEKS, OFFERS = InterestKind.LIKES, InterestKind.SEEKS, InterestKind.OFFERS


# A monthly cap


def test_the_monthly_caps_offered_reach_four_weeks_of_the_operators_cap() -> None:
    assert month_cap_choices(CAP) == list(range(1, 13))
    assert decide({"per_month": "5"}, Current(), NOW, CAP).changes == {"cap_per_month": 5}
    assert decide({"per_month": ""}, Current(cap_per_month=5), NOW, CAP).changes == {
        "cap_per_month": None
    }
    assert decide({"per_month": "5"}, Current(cap_per_month=5), NOW, CAP).changes == {}


@pytest.mark.parametrize("raw", ["0", "13", "x", "-1", "2.5"])
def test_a_monthly_cap_off_the_list_refuses_the_whole_form(raw: str) -> None:
    decision = decide({"per_month": raw, "pause": "2"}, Current(), NOW, CAP)
    assert decision.errors == {"per_month": "per_month_invalid"} and decision.changes == {}


def test_the_monthly_cap_holds_beside_the_weekly_one() -> None:
    assert within_monthly_cap(3, None) and within_monthly_cap(2, 3)
    assert not within_monthly_cap(3, 3)
    # One introduction this week, four this month, a monthly cap of four: no more.
    capped = Availability(1, False, True, None, own_cap_per_month=4, month_intros=4)
    assert not may_take_another(capped, NOW, 2)
    assert may_take_another(Availability(1, False, True, None, month_intros=40), NOW, 2)
    assert may_take_another(
        Availability(0, False, True, None, own_cap_per_month=4, month_intros=3), NOW, 2
    )


def test_within_cap_counts_this_transactions_groups_against_the_monthly_cap() -> None:
    locked = {
        1: Availability(0, False, True, None, own_cap_per_month=3, month_intros=2),
        2: Availability(0, False, True, None),
        3: Availability(0, False, True, None),
    }
    # Person 1 has one introduction left this month: the second group with them is dropped.
    assert within_cap([(1, 2), (1, 3), (2, 3)], lambda g: g, locked, NOW, 5) == [(1, 2), (2, 3)]


# The order of one's channels


def _channels(*kinds: ChannelType) -> list[ChannelAddress]:
    addresses = {EMAIL: "a@example.org", SLACK: "U024BE7LH", HOOK: "https://hooks.example/x"}
    return [ChannelAddress(type=k, address=addresses[k]) for k in kinds]


def test_their_order_ranks_their_channels_and_keeps_the_rest_as_listed() -> None:
    listed = _channels(EMAIL, SLACK, HOOK)
    assert [c.type for c in in_preferred_order(listed, [HOOK])] == [HOOK, EMAIL, SLACK]
    assert [c.type for c in in_preferred_order(listed, ["slack", "email"])] == [SLACK, EMAIL, HOOK]
    assert in_preferred_order(listed, None) == listed and in_preferred_order(listed, []) == listed
    # A type they ranked but no longer have changes nothing.
    ordered = in_preferred_order(listed, [ChannelType.MATRIX, HOOK])
    assert [c.type for c in ordered] == [HOOK, EMAIL, SLACK]


def test_the_page_shows_their_order_over_the_integrations() -> None:
    assert effective_order([EMAIL, HOOK], None) == [EMAIL, HOOK]
    assert effective_order([EMAIL, HOOK, EMAIL], (HOOK,)) == [HOOK, EMAIL]


def test_choosing_an_order_saves_it_and_an_untouched_page_saves_nothing() -> None:
    known = [EMAIL, HOOK]
    form = {"channel_1": "webhook", "channel_2": "email"}
    assert decide(form, Current(), NOW, CAP, known).changes == {"channel_order": [HOOK, EMAIL]}
    untouched = {"channel_1": "email", "channel_2": "webhook"}
    assert decide(untouched, Current(), NOW, CAP, known).changes == {}
    chosen = Current(channel_order=(HOOK, EMAIL))
    assert decide(form, chosen, NOW, CAP, known).changes == {}
    assert decide(untouched, chosen, NOW, CAP, known).changes == {"channel_order": [EMAIL, HOOK]}


@pytest.mark.parametrize(
    "form",
    [
        {"channel_1": "email", "channel_2": "email"},  # one twice
        {"channel_1": "slack", "channel_2": "email"},  # not one roac knows for them
        {"channel_1": "pigeon"},
    ],
)
def test_an_order_that_is_not_theirs_is_refused(form: dict[str, str]) -> None:
    assert channel_order(form, [EMAIL, HOOK]) == "channel_order_invalid"
    assert decide(form, Current(), NOW, CAP, [EMAIL, HOOK]).errors == {
        "channel_order": "channel_order_invalid"
    }


def test_the_ranks_are_read_in_order_whatever_the_forms_order() -> None:
    assert channel_order({"channel_2": "email", "channel_1": "slack"}, None) == [SLACK, EMAIL]
    assert channel_order({"pause": "keep"}, [EMAIL]) is None


def test_the_event_carries_the_new_fields_and_the_matcher_reads_them() -> None:
    event = ContactPreferencesChanged(
        source="notifier",
        correlation_id="preferences-2",
        occurred_at=NOW,
        data=PreferencesData(
            source="crm", external_id="42", changed=["cap_per_month", "channel_order"],
            cap_per_month=4, channel_order=[HOOK, EMAIL],
        ),
    )  # fmt: skip
    decoded = decode_event(encode_event(event))
    assert isinstance(decoded, ContactPreferencesChanged)
    change = change_of(decoded)
    assert change.cap_month and change.cap_per_month == 4
    assert change.channels and change.channel_order == ("webhook", "email")
    assert not change.pause and not change.cap


def test_an_order_naming_a_channel_twice_is_not_an_event() -> None:
    with pytest.raises(ValueError, match="at most once"):
        PreferencesData(
            source="crm", external_id="42", changed=["channel_order"], channel_order=[EMAIL, EMAIL]
        )


def test_an_older_event_without_the_new_fields_still_reads() -> None:
    body = (
        b'{"type":"contact.preferences_changed.v1","source":"notifier","correlation_id":"c",'
        b'"data":{"source":"crm","external_id":"42","changed":["cap_per_week"],'
        b'"cap_per_week":1}}'
    )
    decoded = decode_event(body)
    assert isinstance(decoded, ContactPreferencesChanged)
    assert decoded.data.channel_order is None and decoded.data.cap_per_month is None


# Interests


def test_the_page_shows_its_own_changes_until_the_matcher_has_them() -> None:
    held = [
        HeldInterest("bees", LIKES, NOW - timedelta(days=3)),
        HeldInterest("kites", OFFERS, NOW - timedelta(days=3)),
    ]
    changes = [
        InterestChange("clay", SEEKS, withdrawn=False, at=NOW - timedelta(seconds=5)),
        InterestChange("kites", OFFERS, withdrawn=True, at=NOW - timedelta(seconds=5)),
    ]
    assert shown_interests(held, changes, NOW) == [
        ShownInterest("bees", LIKES),
        ShownInterest("clay", SEEKS, pending=True),
    ]
    # The matcher applied the declaration: no longer pending.
    applied = [*held, HeldInterest("clay", SEEKS, NOW - timedelta(seconds=5))]
    assert ShownInterest("clay", SEEKS) in shown_interests(applied, changes, NOW)


def test_a_later_declaration_wins_over_the_pages_withdrawal() -> None:
    held = [HeldInterest("kites", OFFERS, NOW - timedelta(seconds=1))]
    removed = [InterestChange("kites", OFFERS, withdrawn=True, at=NOW - timedelta(seconds=9))]
    assert shown_interests(held, removed, NOW) == [ShownInterest("kites", OFFERS)]


def test_a_change_the_matcher_never_showed_is_forgotten_after_a_day() -> None:
    old = InterestChange("clay", SEEKS, withdrawn=False, at=NOW - PENDING_FOR - timedelta(1))
    assert shown_interests([], [old], NOW) == []
    assert recent([old], NOW) == []


def test_adding_an_interest_declares_it_once() -> None:
    form = {"interest_action": "add", "topic": "  Tide Pools ", "kind": "seeks"}
    decided = decide_interest(form, [], NOW)
    assert decided.changes == [InterestChange("tide pools", SEEKS, withdrawn=False, at=NOW)]
    assert decide_interest(form, [ShownInterest("tide pools", SEEKS)], NOW).changes == []


def test_removing_withdraws_and_a_second_click_does_nothing() -> None:
    shown = [ShownInterest("bees", LIKES)]
    form = {"interest_action": "remove", "topic": "bees", "kind": "likes"}
    assert decide_interest(form, shown, NOW).changes == [
        InterestChange("bees", LIKES, withdrawn=True, at=NOW)
    ]
    assert decide_interest(form, [], NOW).changes == []


def test_another_kind_is_a_withdrawal_and_a_declaration() -> None:
    shown = [ShownInterest("bees", LIKES)]
    form = {"interest_action": "change", "topic": "bees", "kind": "likes", "new_kind": "offers"}
    assert decide_interest(form, shown, NOW).changes == [
        InterestChange("bees", LIKES, withdrawn=True, at=NOW),
        InterestChange("bees", OFFERS, withdrawn=False, at=NOW),
    ]
    same = {**form, "new_kind": "likes"}
    assert decide_interest(same, shown, NOW).changes == []


@pytest.mark.parametrize(
    ("form", "errors"),
    [
        ({"interest_action": "add", "topic": "", "kind": "likes"}, {"topic": "topic_invalid"}),
        (
            {"interest_action": "add", "topic": "bees\u202e", "kind": "likes"},
            {"topic": "topic_invalid"},
        ),
        (
            {"interest_action": "add", "topic": "x" * 201, "kind": "likes"},
            {"topic": "topic_invalid"},
        ),
        ({"interest_action": "add", "topic": "bees", "kind": "loves"}, {"kind": "kind_invalid"}),
        (
            {"interest_action": "steal", "topic": "bees", "kind": "likes"},
            {"interest_action": "interest_action_invalid"},
        ),
        (
            {"interest_action": "change", "topic": "bees", "kind": "likes", "new_kind": "?"},
            {"kind": "kind_invalid"},
        ),
    ],
)
def test_bad_interest_forms_are_refused_with_a_reason(
    form: dict[str, str], errors: dict[str, str]
) -> None:
    decided = decide_interest(form, [ShownInterest("bees", LIKES)], NOW)
    assert decided.errors == errors and decided.changes == []


def test_the_matchers_answer_is_read_and_what_is_unknown_left_out() -> None:
    held = held_from(
        {
            "channels": [
                {"type": "webhook", "address": "https://hooks.example/x"},
                {"type": "carrier_pigeon", "address": "loft 3"},
                {"type": "email", "address": "a@example.org"},
            ],
            "interests": [
                {"topic": "bees", "kind": "likes", "declared_at": NOW.isoformat()},
                {"topic": "moss", "kind": "adores", "declared_at": None},
            ],
        }
    )
    assert held.channel_types == [HOOK, EMAIL]
    assert held.interests == [HeldInterest("bees", LIKES, NOW)]


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", ["Choice 2", "I can offer it", "(saving)"]), ("de", ["Wahl 2", "Biete ich an"])],
)
def test_the_page_renders_channels_and_interests_in_each_language(
    language: str, expected: list[str]
) -> None:
    html = (
        _ENVIRONMENTS[language]
        .get_template("prefs.html.j2")
        .render(
            lang=language, action="/preferences/t", current=Current(), paused=False,
            saved=False, errors={"channel_order": "channel_order_invalid"}, form={},
            weeks=(1, 2, 4), caps=[1, 2], month_caps=month_cap_choices(2), operator_cap=2,
            channels=_channels(HOOK, EMAIL), channel_order=[HOOK, EMAIL],
            interests=[ShownInterest("bees", OFFERS), ShownInterest("clay", LIKES, pending=True)],
            interests_known=True, kinds=list(InterestKind), languages={"en": "English"},
            chosen_language=language, min_date="2027-03-02", max_date="2028-03-01",
            anchors={"channel_order": "channel_1"},
        )
    )  # fmt: skip
    for text in expected:
        assert text in html
    assert '<a href="#channel_1">' in html and 'id="kind-2"' in html
    assert "{n}" not in html
