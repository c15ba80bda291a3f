"""The check-in's lifecycle ("did you meet?", services/notifier/checkins.py), table-tested, and
the check-in message in each language and chat style, and the clock an end-to-end test moves
(ROAC_CLOCK_OFFSET_FILE)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from services.notifier import checkins
from services.notifier.checkin_messages import checkin_outgoing
from services.notifier.checkins import CheckinState as S
from services.notifier.checkins import Reply, Verdict
from services.notifier.clock import OffsetFileClock, SystemClock, clock_from_setting, parse_offset
from services.notifier.links import LinkAction, LinkKeyring, LinkMaker
from services.notifier.optin import IntroState
from services.notifier.rendering import MessageRenderer, Style
from services.notifier.store.rows import DeliveryRecord, IntroRecord
from shared.events import (
    ChannelAddress,
    ChannelType,
    CheckinAnswer,
    DeliveryKind,
    IntroData,
    IntroTopic,
    Participant,
    TopicRelation,
)

NOW = datetime(2027, 5, 3, 10, tzinfo=UTC)
DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@pytest.mark.parametrize(
    ("state", "erased", "opted_out", "introduced", "expected"),
    [
        (S.DUE, False, False, True, (S.SENT, DeliveryKind.CHECKIN)),
        (S.NOT_YET, False, False, True, (S.SENT_AGAIN, DeliveryKind.CHECKIN_AGAIN)),
        (S.DUE, True, False, True, (S.SKIPPED, None)),
        (S.DUE, False, True, True, (S.SKIPPED, None)),
        (S.NOT_YET, False, True, True, (S.SKIPPED, None)),
        (S.DUE, False, False, False, (S.SKIPPED, None)),  # an erasure closed the introduction
        # Not waiting any more (answered meanwhile, or another sweep sent it): nothing.
        (S.SENT, False, False, True, None),
        (S.SENT_AGAIN, False, False, True, None),
        (S.MET, False, False, True, None),
        (S.SKIPPED, False, False, True, None),
        (S.EXPIRED, False, False, True, None),
    ],
)
def test_when_due(
    state: S,
    erased: bool,
    opted_out: bool,
    introduced: bool,
    expected: tuple[S, DeliveryKind | None] | None,
) -> None:
    send = checkins.when_due(state, introduced=introduced, erased=erased, opted_out=opted_out)
    assert (None if send is None else (send.state, send.kind)) == expected


@pytest.mark.parametrize(
    ("state", "reply", "verdict", "after", "feedback"),
    [
        # The first ask: each answer.
        (S.SENT, Reply.MET, Verdict.NOTED, S.MET, CheckinAnswer.MET),
        (S.SENT, Reply.DIDNT_HAPPEN, Verdict.NOTED, S.DIDNT_HAPPEN, CheckinAnswer.DIDNT_HAPPEN),
        (S.SENT, Reply.NOT_FOR_ME, Verdict.NOTED, S.NOT_FOR_ME, CheckinAnswer.NOT_FOR_ME),
        (S.SENT, Reply.NOT_YET, Verdict.ASK_AGAIN, S.NOT_YET, None),
        # Waiting for the reminder: "not yet" again changes nothing; an answer for good ends it.
        (S.NOT_YET, Reply.NOT_YET, Verdict.REPEATED, S.NOT_YET, None),
        (S.NOT_YET, Reply.MET, Verdict.NOTED, S.MET, CheckinAnswer.MET),
        (S.NOT_YET, Reply.NOT_FOR_ME, Verdict.NOTED, S.NOT_FOR_ME, CheckinAnswer.NOT_FOR_ME),
        # The reminder: a second "not yet" closes it, nothing more is asked.
        (S.SENT_AGAIN, Reply.NOT_YET, Verdict.NOTED, S.STILL_NOT_YET, None),
        (S.SENT_AGAIN, Reply.MET, Verdict.NOTED, S.MET, CheckinAnswer.MET),
        # Answered for good: the first answer stands.
        (S.MET, Reply.MET, Verdict.REPEATED, S.MET, None),
        (S.MET, Reply.NOT_FOR_ME, Verdict.CLOSED, S.MET, None),
        (S.NOT_FOR_ME, Reply.MET, Verdict.CLOSED, S.NOT_FOR_ME, None),
        (S.STILL_NOT_YET, Reply.NOT_YET, Verdict.REPEATED, S.STILL_NOT_YET, None),
        (S.STILL_NOT_YET, Reply.MET, Verdict.CLOSED, S.STILL_NOT_YET, None),
        # Never asked, or too late.
        (S.DUE, Reply.MET, Verdict.INVALID, S.DUE, None),
        (S.SKIPPED, Reply.MET, Verdict.INVALID, S.SKIPPED, None),
        (S.EXPIRED, Reply.MET, Verdict.EXPIRED, S.EXPIRED, None),
    ],
)
def test_answer(
    state: S, reply: Reply, verdict: Verdict, after: S, feedback: CheckinAnswer | None
) -> None:
    step = checkins.answer(state, reply, now=NOW, again_after=WEEK, sent_at=NOW - DAY)
    assert (step.verdict, step.state, step.feedback) == (verdict, after, feedback)
    assert step.changed is (verdict in (Verdict.NOTED, Verdict.ASK_AGAIN))
    assert (step.due_at is not None) is (verdict is Verdict.ASK_AGAIN)


def test_not_yet_asks_again_as_long_later() -> None:
    step = checkins.answer(S.SENT, Reply.NOT_YET, now=NOW, again_after=WEEK, sent_at=NOW)
    assert step.due_at == NOW + WEEK


def test_an_answer_after_the_window_is_too_late_and_expires_the_check_in() -> None:
    sent = NOW - checkins.ANSWER_WINDOW - DAY
    step = checkins.answer(S.SENT, Reply.MET, now=NOW, again_after=WEEK, sent_at=sent)
    assert (step.verdict, step.state, step.feedback) == (Verdict.EXPIRED, S.EXPIRED, None)


@pytest.mark.parametrize(
    ("state", "sent_ago", "expected"),
    [
        (S.SENT, checkins.ANSWER_WINDOW + DAY, S.EXPIRED),
        (S.SENT_AGAIN, checkins.ANSWER_WINDOW + DAY, S.EXPIRED),
        (S.SENT, checkins.ANSWER_WINDOW - DAY, S.SENT),
        (S.NOT_YET, checkins.ANSWER_WINDOW + DAY, S.NOT_YET),  # waits for its reminder
        (S.MET, checkins.ANSWER_WINDOW + DAY, S.MET),
        (S.DUE, checkins.ANSWER_WINDOW + DAY, S.DUE),
    ],
)
def test_expire(state: S, sent_ago: timedelta, expected: S) -> None:
    assert checkins.expire(state, NOW - sent_ago, NOW) is expected


@pytest.mark.parametrize(
    ("state", "rating", "rated", "verdict", "feedback"),
    [
        (S.MET, 4, None, Verdict.NOTED, CheckinAnswer.MET),
        (S.MET, 5, 4, Verdict.REPEATED, None),  # once
        (S.MET, 0, None, Verdict.INVALID, None),
        (S.MET, 6, None, Verdict.INVALID, None),
        (S.DIDNT_HAPPEN, 3, None, Verdict.INVALID, None),  # only a meeting is rated
        (S.SENT, 3, None, Verdict.INVALID, None),
    ],
)
def test_rate(
    state: S, rating: int, rated: int | None, verdict: Verdict, feedback: CheckinAnswer | None
) -> None:
    step = checkins.rate(state, rating, rated=rated)
    assert (step.verdict, step.feedback) == (verdict, feedback)
    if verdict is Verdict.NOTED:
        assert step.rating == rating and step.state is S.MET


def test_due_at() -> None:
    assert checkins.due_at(NOW, WEEK) == NOW + WEEK
    assert checkins.due_at(NOW, WEEK, again_at=NOW + DAY) == NOW + DAY


def _intro(language: str | None = None) -> IntroRecord:
    people = [
        Participant(
            source="s",
            external_id=str(i),
            name=name,
            channels=[ChannelAddress(type=ChannelType.EMAIL, address=f"p{i}@example.org")],
            language=language if i == 0 else None,
        )
        for i, name in enumerate(["Ada <b>", "Grace_Hopper"])
    ]
    data = IntroData(
        proposal_id=uuid4(),
        participants=people,
        topics=[IntroTopic(topic="kites", relation=TopicRelation.SHARED)],
        score=1,
        reason="r",
    )
    return IntroRecord(
        data.proposal_id, "double_opt_in", IntroState.INTRODUCED, data, "c", NOW, None
    )


def _delivery(intro: IntroRecord, kind: DeliveryKind) -> DeliveryRecord:
    return DeliveryRecord(
        id=uuid4(),
        proposal_id=intro.id,
        kind=kind,
        positions=(0,),
        recipient_source="s",
        recipient_external_id="0",
        channel="email",
        channel_index=0,
        status="pending",
        attempts=0,
        generation=0,
        not_before=NOW,
    )


@pytest.mark.parametrize("language", [None, "de"])
@pytest.mark.parametrize("kind", [DeliveryKind.CHECKIN, DeliveryKind.CHECKIN_AGAIN])
def test_the_check_in_message(language: str | None, kind: DeliveryKind) -> None:
    intro = _intro(language)
    links = LinkMaker("https://roac.example", LinkKeyring.single(b"k" * 32))
    out = checkin_outgoing(
        MessageRenderer(),
        links,
        intro,
        _delivery(intro, kind),
        ChannelType.EMAIL,
        "p0@example.org",
        "https://roac.example/links/unsub",
        NOW.timestamp(),
    )
    rendered = out.rendered
    assert "Grace_Hopper" in rendered.subject
    again = kind is DeliveryKind.CHECKIN_AGAIN
    not_yet = out.payload["links"]["not_yet"]
    # The reminder offers no second "not yet".
    assert (not_yet in rendered.text) is not again and (not_yet in rendered.html) is not again
    for action in ("met", "didnt_happen", "not_for_me"):
        url = out.payload["links"][action]
        assert url in rendered.text and url in rendered.html
        assert all(url in text for text in rendered.chat.values())
    assert ("Haben Sie" in rendered.subject) is (language == "de")
    assert "Ada &lt;b&gt;" in rendered.html and "Ada <b>" not in rendered.html
    assert r"Grace\_Hopper" in rendered.chat[Style.MARKDOWN]
    assert out.payload["type"] == "roac.checkin" and out.kind is kind
    # Every link is its own signed claim, for this person and introduction.
    assert len(set(out.payload["links"].values())) == 6
    # The footer links to the person's own preferences page, as every other message does.
    preferences = out.payload["links"]["preferences"]
    assert preferences.startswith("https://roac.example/preferences/")
    assert preferences in rendered.text and preferences in rendered.html
    assert all(preferences in text for text in rendered.chat.values())
    claim = LinkKeyring.single(b"k" * 32).verify(preferences.rsplit("/", 1)[1], NOW.timestamp())
    assert (claim.action, claim.source, claim.external_id) == (LinkAction.PREFERENCES, "s", "0")
    label = "Ihre Einstellungen" if language == "de" else "Your preferences"
    assert f"{label}: {preferences}" in rendered.text


# --- the clock a test moves (ROAC_CLOCK_OFFSET_FILE) ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("", 0.0), ("3600", 3600.0), (" -1.5\n", -1.5), ("soon", 0.0), ("nan", 0.0), ("1e12", 0.0)],
)
def test_a_clock_file_holds_seconds_and_anything_else_counts_as_none(
    text: str, seconds: float
) -> None:
    assert parse_offset(text) == seconds


def test_the_clock_moves_when_its_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    clock = OffsetFileClock(path)
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 1  # no file: no offset
    path.write_text("86400")
    assert 86399 < (clock.now() - datetime.now(UTC)).total_seconds() < 86401
    path.write_text("172800.0")  # another size: read again
    assert 172799 < (clock.now() - datetime.now(UTC)).total_seconds() < 172801
    path.unlink()
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 1
    assert isinstance(clock_from_setting(""), SystemClock)
    assert isinstance(clock_from_setting(str(path)), OffsetFileClock)
