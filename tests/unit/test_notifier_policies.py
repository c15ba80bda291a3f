"""The notifier's pure rules: links, quiet hours, retries, pacing, destinations, planning."""

import base64
import random
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from services.notifier.delivery_policy import destination_allowed
from services.notifier.links import (
    InvalidLink,
    LinkAction,
    LinkClaim,
    LinkKeyring,
    sign,
    sign_legacy,
    verify,
)
from services.notifier.planning import QuietHours, plan
from services.notifier.quiet_hours import earliest_delivery, is_quiet
from services.notifier.rate_limit import RateLimiter
from services.notifier.retry_policy import http_status_is_transient, parse_retry_after, retry_delay
from shared.events import (
    ChannelAddress,
    ChannelType,
    DeliveryKind,
    IntroData,
    IntroTopic,
    Participant,
)

RING = LinkKeyring.single(b"s" * 32, key_id="k1")
NOW = 1_800_000_000


def _claim(action: LinkAction = LinkAction.ACCEPT) -> LinkClaim:
    return LinkClaim(action, "crm", "42", NOW + 60, uuid4())


def test_links_verify_and_carry_their_single_purpose() -> None:
    claim = _claim()
    assert verify(sign(claim, RING), RING, NOW) == claim
    decline = sign(_claim(LinkAction.DECLINE), RING)
    assert verify(decline, RING, NOW).action is LinkAction.DECLINE


def test_a_link_names_its_key_and_carries_no_readable_identifier() -> None:
    claim = LinkClaim(LinkAction.UNSUBSCRIBE, "crm", "ada-lovelace-42", NOW + 60)
    token = sign(claim, RING)
    key_id, sealed = token.split(".")
    assert key_id == "k1"
    decoded = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    assert b"ada-lovelace" not in decoded
    assert b"crm" not in decoded
    assert "ada" not in token


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + "AA",
        lambda t: "x" + t,
        lambda t: t.replace(".", ""),
        lambda t: "",
        lambda t: t + ".x",
        lambda t: "unknown." + t.split(".")[1],
    ],
)
def test_tampered_links_are_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidLink):
        verify(mangle(sign(_claim(), RING)), RING, NOW)


def test_links_expire_and_need_the_key() -> None:
    token = sign(_claim(), RING)
    with pytest.raises(InvalidLink, match="expired"):
        verify(token, RING, NOW + 61)
    with pytest.raises(InvalidLink, match="signature"):
        verify(token, LinkKeyring.single(b"t" * 32, key_id="k1"), NOW)


def test_a_rotated_ring_signs_with_the_newest_key_and_verifies_old_links() -> None:
    old_ring = LinkKeyring([("k1", b"s" * 32)])
    sent_last_year = sign(_claim(LinkAction.UNSUBSCRIBE), old_ring)
    rotated = LinkKeyring([("k2", b"n" * 32), ("k1", b"s" * 32)])
    assert rotated.signing_key_id == "k2"
    assert sign(_claim(), rotated).startswith("k2.")
    assert verify(sent_last_year, rotated, NOW).action is LinkAction.UNSUBSCRIBE
    retired = LinkKeyring([("k2", b"n" * 32)])
    with pytest.raises(InvalidLink):
        verify(sent_last_year, retired, NOW)


def test_links_of_the_first_format_still_verify_under_any_ring_key() -> None:
    claim = _claim(LinkAction.UNSUBSCRIBE)
    legacy = sign_legacy(claim, b"s" * 32)
    assert verify(legacy, LinkKeyring([("k9", b"n" * 32), ("k1", b"s" * 32)]), NOW) == claim
    with pytest.raises(InvalidLink, match="signature"):
        verify(legacy, LinkKeyring.single(b"n" * 32), NOW)


def test_a_ring_refuses_bad_or_repeated_key_ids() -> None:
    with pytest.raises(ValueError, match="twice"):
        LinkKeyring([("k1", b"a" * 32), ("k1", b"b" * 32)])
    with pytest.raises(ValueError, match="link key id"):
        LinkKeyring([("k.1", b"a" * 32)])
    with pytest.raises(ValueError, match="at least one"):
        LinkKeyring([])


@pytest.mark.parametrize(
    ("hour", "quiet"),
    [(20, False), (21, True), (23, True), (0, True), (7, True), (8, False), (12, False)],
)
def test_quiet_hours_wrap_midnight(hour: int, quiet: bool) -> None:
    assert is_quiet(hour, 21, 8) is quiet


def test_a_message_in_quiet_hours_waits_for_local_morning() -> None:
    # 22:30 in Berlin (UTC+1 in winter) is 21:30 UTC: deliver at 08:00 Berlin = 07:00 UTC next day.
    now = datetime(2026, 1, 15, 21, 30, tzinfo=UTC)
    assert earliest_delivery(now, "Europe/Berlin", start=21, end=8) == datetime(
        2026, 1, 16, 7, 0, tzinfo=UTC
    )
    # 03:00 in New York: same day 08:00 local.
    now = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
    assert earliest_delivery(now, "America/New_York", start=21, end=8) == datetime(
        2026, 1, 15, 13, 0, tzinfo=UTC
    )
    # Daytime in Tokyo: at once.
    now = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
    assert earliest_delivery(now, "Asia/Tokyo", start=21, end=8) == now


def test_quiet_hours_across_a_dst_change() -> None:
    # The night Berlin moves to summer time (29 March 2026): morning is 08:00 CEST = 06:00 UTC.
    now = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)
    assert earliest_delivery(now, "Europe/Berlin", start=21, end=8) == datetime(
        2026, 3, 29, 6, 0, tzinfo=UTC
    )


def test_unknown_time_zones_fall_back() -> None:
    now = datetime(2026, 1, 15, 22, 0, tzinfo=UTC)
    assert earliest_delivery(now, None, start=21, end=8, fallback_timezone="UTC").hour == 8


def test_retry_delays_grow_jitter_and_respect_retry_after() -> None:
    rng = random.Random(1)
    delays = [retry_delay(n, base=5, cap=600, rng=rng) for n in range(1, 8)]
    assert 4 <= delays[0] <= 6 and 12 <= delays[1] <= 18 and delays[-1] <= 720
    assert (
        25 * 60
        <= sum(retry_delay(n, base=5, cap=600, rng=random.Random(n)) for n in range(1, 8))
        <= 36 * 60
    )
    assert retry_delay(1, base=5, cap=600, retry_after=120, rng=rng) >= 120


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("status", "transient"),
    [(408, True), (429, True), (500, True), (503, True), (400, False), (404, False), (410, False)],
)
def test_http_statuses(status: int, transient: bool) -> None:
    assert http_status_is_transient(status) is transient


def test_pacing_one_message_per_second_per_destination() -> None:
    limiter = RateLimiter(rate_per_second=1.0)
    assert limiter.reserve("hook-a", now=100.0, max_wait=2) == 0
    assert limiter.reserve("hook-a", now=100.1, max_wait=2) == pytest.approx(0.9)
    assert limiter.reserve("hook-a", now=100.2, max_wait=2) == pytest.approx(1.8)
    assert limiter.reserve("hook-a", now=100.3, max_wait=2) is None  # would wait 2.7 s
    assert limiter.next_free_in("hook-a", 100.3) == pytest.approx(2.7)
    assert limiter.reserve("hook-b", now=100.3, max_wait=2) == 0  # another destination
    assert limiter.reserve("hook-a", now=110.0, max_wait=2) == 0  # time passed


def test_provider_announced_limits_hold_the_destination() -> None:
    limiter = RateLimiter(rate_per_second=100.0)
    limiter.hold_until("discord", 105.0)
    assert limiter.reserve("discord", now=100.0, max_wait=2) is None
    assert limiter.reserve("discord", now=105.0, max_wait=2) == 0


def test_webhook_destinations_must_be_allowed() -> None:
    allowed = ("hooks.slack.com", "*.webhook.office.com", "127.0.0.1")
    assert destination_allowed("https://hooks.slack.com/services/T/B/X", allowed)
    assert destination_allowed("https://acme.webhook.office.com/x", allowed)
    assert destination_allowed("http://127.0.0.1:9999/hook", allowed)
    assert not destination_allowed("https://hooks.slack.com.evil.org/x", allowed)
    assert not destination_allowed("http://169.254.169.254/latest/meta-data", allowed)
    assert not destination_allowed("not a url", allowed)


def test_group_dm_for_slack_users_and_quiet_hours_per_person() -> None:
    def person(i: int, channel: ChannelType, address: str, tz: str) -> Participant:
        return Participant(
            source="s",
            external_id=str(i),
            name=f"P{i}",
            timezone=tz,
            channels=[ChannelAddress(type=channel, address=address)],
        )

    intro = IntroData(
        proposal_id=uuid4(),
        participants=[
            person(0, ChannelType.SLACK, "U000AAA", "Europe/Berlin"),
            person(1, ChannelType.SLACK, "U000BBB", "Europe/Berlin"),
            person(2, ChannelType.EMAIL, "p2@example.org", "Asia/Tokyo"),
        ],
        topics=[IntroTopic(topic="t", relation="shared")],
        score=1.0,
        reason="r",
    )
    now = datetime(2026, 1, 15, 22, 0, tzinfo=UTC)  # 23:00 Berlin, 07:00 Tokyo
    quiet = QuietHours(enabled=True, start=21, end=8, fallback_timezone="UTC")
    planned = plan(DeliveryKind.INTRO, intro, [0, 1, 2], now, quiet)
    assert [p.positions for p in planned] == [(0, 1), (2,)]
    assert planned[0].channel is ChannelType.SLACK
    assert planned[0].not_before == datetime(2026, 1, 16, 7, 0, tzinfo=UTC)  # Berlin morning
    assert planned[1].not_before == datetime(2026, 1, 15, 23, 0, tzinfo=UTC)  # Tokyo 08:00
    asks = plan(DeliveryKind.ASK, intro, [0, 1], now, QuietHours(False, 21, 8, "UTC"))
    assert [a.positions for a in asks] == [(0,), (1,)] and all(a.not_before == now for a in asks)
    assert plan(DeliveryKind.ASK, intro, [0], now, quiet)[0].id == asks[0].id  # stable ids
    assert now + timedelta(hours=9) == planned[0].not_before
