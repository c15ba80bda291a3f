"""The console's pure parts: signed cookie values, where a sign-in may send the browser back
to, the password rule, the SVG charts (numbers on every bar and point, no text unescaped), the
Today page's rates and per-pool counts, and how a person to block is typed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.console.accounts import password_problem
from services.console.activity import (
    LIVE,
    OTHER,
    acceptance_rate,
    met_rate,
    per_pool,
    pool_summaries,
)
from services.console.charts import intros_per_week, rates_per_week
from services.console.cookies import CookieSigner
from services.console.people_pages import other_person
from services.console.pool_pages import _pool_form
from services.console.pool_pages import pool_body as _pool_body
from services.console.pool_pages import schedule_text as _schedule_text
from services.console.web import safe_next

KEY = b"k" * 32


def test_a_signed_value_verifies_until_it_expires_and_only_for_its_purpose() -> None:
    signer = CookieSigner(KEY)
    value = signer.sign("session", "abc", int(time.time()) + 60)
    assert signer.verify("session", value) == "abc"
    assert signer.verify("signin", value) is None  # another purpose
    assert CookieSigner(b"o" * 32).verify("session", value) is None  # another key
    payload, expires, signature = value.split(".")
    assert signer.verify("session", f"xyz.{expires}.{signature}") is None  # altered payload
    assert signer.verify("session", f"{payload}.{int(expires) + 999}.{signature}") is None
    assert signer.verify("session", value, now=int(expires) + 1) is None  # expired
    for garbage in (None, "", "a.b", "a.b.c.d", "a.notanumber.c"):
        assert signer.verify("session", garbage) is None


def test_a_payload_with_a_dot_is_refused() -> None:
    with pytest.raises(ValueError, match="dot"):
        CookieSigner(KEY).sign("session", "a.b", 1)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/pools", "/pools"),
        ("/rounds?pool=x", "/rounds?pool=x"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        (None, "/"),
    ],
)
def test_after_sign_in_only_a_path_of_the_console(given: str | None, kept: str) -> None:
    assert safe_next(given) == kept


def test_passwords_are_long_enough() -> None:
    assert password_problem("short") is not None
    assert password_problem("x" * 2000) is not None
    assert password_problem("a long enough passphrase") is None


WEEKS = [
    {"week": "2026-11-23", "total": 3, "introduced": 1, "asked": 1, "declined": 1},
    {"week": "2026-11-30", "total": 0},
]


def test_every_bar_carries_its_number_and_the_legend_its_patterns() -> None:
    svg = str(intros_per_week(WEEKS))
    assert svg.startswith("<svg") and 'role="img"' in svg
    assert ">3</text>" in svg and ">0</text>" in svg
    assert all(p in svg for p in ("roac-solid", "roac-hatch", "roac-dots"))
    assert "11-23" in svg and "<title" in svg and "<desc" in svg


def test_the_acceptance_rate_counts_decided_introductions_only() -> None:
    rates = acceptance_rate(WEEKS)
    assert rates == [0.5, None]


def test_the_we_met_rate_counts_answered_check_ins_only() -> None:
    weeks = [{"week": "2026-11-23", "answered": 4, "met": 3}, {"week": "2026-11-30", "met": 0}]
    assert met_rate(weeks) == [0.75, None]
    svg = str(rates_per_week(weeks, [0.5, None], met_rate(weeks), of=", pool mondays"))
    # Each point carries its percentage; the two lines differ by dash and marker, not only hue.
    assert ">50%</text>" in svg and ">75%</text>" in svg and "no answers yet" in svg
    assert 'stroke-dasharray="6 4"' in svg and "<circle" in svg and "<rect" in svg
    assert "pool mondays" in svg and "acceptance rate" in svg and "we met” rate" in svg


def test_each_pool_gets_its_rounds_weeks_and_live_matches_their_own() -> None:
    weeks = [{"week": "2026-11-23"}, {"week": "2026-11-30"}]
    by_round: list[dict[str, Any]] = [
        {"week": "2026-11-23", "round": "r1", "total": 2, "introduced": 2, "answered": 2, "met": 1},
        {"week": "2026-11-30", "round": "r2", "total": 1, "declined": 1},
        {"week": "2026-11-30", "round": None, "total": 3, "asked": 3},
        {"week": "2026-11-30", "round": "gone", "total": 1, "expired": 1},
    ]
    pools = per_pool(weeks, by_round, {"r1": "mondays", "r2": "mondays"})
    assert [w["total"] for w in pools["mondays"]] == [2, 1]
    assert [w["week"] for w in pools["mondays"]] == ["2026-11-23", "2026-11-30"]
    assert pools[LIVE][1]["asked"] == 3 and pools[LIVE][0]["total"] == 0
    assert pools[OTHER][1]["expired"] == 1
    rows = {r["pool"]: r for r in pool_summaries(["mondays", "fridays"], pools)}
    assert rows["mondays"]["acceptance"] == 2 / 3 and rows["mondays"]["met_rate"] == 0.5
    assert rows["fridays"]["total"] == 0 and rows["fridays"]["acceptance"] is None
    assert rows[LIVE]["listed"] is False and rows["mondays"]["listed"] is True


@pytest.mark.parametrize(
    ("typed", "found"),
    [
        ("crm/1234", ("crm", "1234")),
        (" CRM/a/b ", ("crm", "a/b")),  # an id may hold a slash
        ("crm", None),
        ("/1234", None),
        ("crm/ ", None),
    ],
)
def test_the_other_person_of_a_pairing_is_typed_as_source_slash_id(
    typed: str, found: tuple[str, str] | None
) -> None:
    assert other_person(typed) == found


def test_chart_text_is_escaped() -> None:
    svg = str(intros_per_week([{"week": "<script>", "total": 1, "introduced": 1}]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_ticked_weekdays_make_a_calendar_schedule_and_nothing_ticked_an_interval() -> None:
    form = {"name": "mondays", "at": "09:00", "timezone": "Europe/Berlin", "every_weeks": "2"}
    calendar = _pool_body({**form, "every": "1", "unit": "weeks"}, ["mon"])
    assert calendar["schedule"] == {
        "weekdays": ["mon"],
        "at": "09:00",
        "timezone": "Europe/Berlin",
        "every_weeks": 2,
    }
    assert calendar["every_seconds"] is None  # one or the other, never both
    assert calendar["checkin_after_days"] is None
    assert _pool_body({**form, "checkin_after_days": " 3 "}, [])["checkin_after_days"] == 3
    interval = _pool_body({**form, "every": "1", "unit": "weeks"}, [])
    assert interval["schedule"] is None and interval["every_seconds"] == 7 * 86400


def test_a_cron_expression_makes_a_cron_schedule_and_is_kept_on_edit() -> None:
    form = {"name": "firsts", "timezone": "Europe/Berlin", "cron": " 0 9 1-7 * * "}
    body = _pool_body({**form, "every": "1", "unit": "weeks"}, ["mon"])
    assert body["schedule"] == {"cron": "0 9 1-7 * *", "timezone": "Europe/Berlin"}
    assert body["every_seconds"] is None
    stored = {"name": "firsts", "schedule": {"cron": "0 9 1-7 * *", "timezone": "UTC"}}
    assert _pool_form(stored)["cron"] == "0 9 1-7 * *"  # saving the form again keeps it
    assert _schedule_text(stored) == "cron 0 9 1-7 * * (UTC)"


def test_schedules_read_as_people_say_them() -> None:
    monday = {"weekdays": ["mon"], "at": "09:00", "timezone": "Europe/Berlin", "every_weeks": 1}
    assert _schedule_text({"schedule": monday}) == "Mondays at 09:00 (Europe/Berlin)"
    twice = {**monday, "weekdays": ["mon", "thu"], "every_weeks": 2}
    assert _schedule_text({"schedule": twice}) == (
        "every 2 weeks: Mondays and Thursdays at 09:00 (Europe/Berlin)"
    )
    assert _schedule_text({"every_seconds": 7 * 86400}) == "every week"
    assert _schedule_text({}) == "on request only"
