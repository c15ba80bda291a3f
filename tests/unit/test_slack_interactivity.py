"""Slack buttons in plain Python: Slack's request signature (good, bad, stale, a replay after the
5-minute window), the interactivity payload, the Block Kit ask and check-in ("did you meet?"),
the answered message, and the endpoint's answers (401, 400, 200) with fake answer use cases, a
fake responder and a fake clock (no database, no network); the Slack app manifest's scopes."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import uuid4

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from services.notifier import slack_interactivity as si
from services.notifier.answers import AnswerResult, Outcome
from services.notifier.channels.base import Outgoing
from services.notifier.channels.slack_blocks import (
    ACCEPT_ACTION,
    ACTIONS_BLOCK_ID,
    CHECKIN_ACTIONS,
    DECLINE_ACTION,
    TEXT_BLOCK_ID,
    ask_blocks,
    blocks_for,
    link_token,
)
from services.notifier.checkin_messages import checkin_outgoing
from services.notifier.checkin_service import CheckinResult
from services.notifier.checkins import CheckinState, Reply, Verdict
from services.notifier.links import LinkAction, LinkClaim, LinkKeyring, LinkMaker
from services.notifier.optin import IntroState
from services.notifier.rendering import Links, MessageRenderer, Rendered, Style, Trusted
from services.notifier.slack_routes import SlackButtons, slack
from services.notifier.store.rows import DeliveryRecord, IntroRecord
from shared.events import (
    ChannelAddress,
    ChannelType,
    DeliveryKind,
    IntroData,
    IntroTopic,
    Participant,
    TopicRelation,
)
from shared.secret_policy import new_secret, slack_signing_secret_weakness
from shared.settings import Settings
from tests.support.clock import FakeClock
from tests.support.fake_slack import click_body, signed_headers

SECRET = secrets.token_hex(16)  # as Slack generates them
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())

# Slack's own example (api.slack.com/authentication/verifying-requests-from-slack).
SLACK_DOC_SECRET = b"8f742231b10e8888abcd99yyyzzz85a5"
SLACK_DOC_TIMESTAMP = "1531420618"
SLACK_DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
    b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
    b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


# --- the signature -----------------------------------------------------------------------------


def test_the_signature_is_the_one_in_slacks_documentation() -> None:
    assert si.signature(SLACK_DOC_SECRET, SLACK_DOC_TIMESTAMP, SLACK_DOC_BODY) == (
        SLACK_DOC_SIGNATURE
    )
    si.verify(
        SLACK_DOC_SECRET,
        SLACK_DOC_TIMESTAMP,
        SLACK_DOC_SIGNATURE,
        SLACK_DOC_BODY,
        now=int(SLACK_DOC_TIMESTAMP) + 10,
    )


def test_a_request_signed_like_slack_signs_passes() -> None:
    body = b"payload=%7B%7D"
    headers = signed_headers(body, timestamp=T, secret=SECRET)
    si.verify(
        SECRET.encode(),
        headers["X-Slack-Request-Timestamp"],
        headers["X-Slack-Signature"],
        body,
        now=T + 299,
    )


@pytest.mark.parametrize(
    ("timestamp", "signature_of", "body", "reason"),
    [
        (str(T), "other secret", b"payload=%7B%7D", "bad"),  # another app's secret
        (str(T), "tampered body", b"payload=%7B%7D", "bad"),  # body changed after signing
        (str(T), "nothing", b"payload=%7B%7D", "missing X-Slack-Signature"),
        (str(T), "other timestamp", b"payload=%7B%7D", "bad"),  # the header moved, not the MAC
        (None, "right", b"payload=%7B%7D", "malformed"),
        ("12a4", "right", b"payload=%7B%7D", "malformed"),
        ("-1", "right", b"payload=%7B%7D", "malformed"),
        ("1" * 40, "right", b"payload=%7B%7D", "malformed"),
        ("\u0661\u0662", "right", b"payload=%7B%7D", "malformed"),  # non-ASCII digits
    ],
)
def test_a_bad_signature_or_timestamp_is_refused(
    timestamp: str | None, signature_of: str, body: bytes, reason: str
) -> None:
    stamp = timestamp or ""
    presented: str | None = {
        "right": si.signature(SECRET.encode(), stamp, body),
        "other secret": si.signature(secrets.token_hex(16).encode(), stamp, body),
        "tampered body": si.signature(SECRET.encode(), stamp, body + b"x"),
        "other timestamp": si.signature(SECRET.encode(), str(T - 1), body),
        "nothing": None,
    }[signature_of]
    with pytest.raises(si.RefusedRequest, match=reason):
        si.verify(SECRET.encode(), timestamp, presented, body, now=T)


@pytest.mark.parametrize("offset", [301, -301, 3600, -86400])
def test_a_timestamp_more_than_5_minutes_off_is_refused_even_when_signed(offset: int) -> None:
    body = b"payload=%7B%7D"
    signature = si.signature(SECRET.encode(), str(T), body)
    with pytest.raises(si.RefusedRequest, match="stale"):
        si.verify(SECRET.encode(), str(T), signature, body, now=T + offset)


def test_a_captured_request_replayed_after_the_window_is_refused() -> None:
    body = click_body(_posted_ask(), ACCEPT_ACTION, "U0AAA", "https://hooks.slack.com/a/1")
    captured = signed_headers(body, timestamp=T, secret=SECRET)

    def replay(at: int) -> None:
        si.verify(
            SECRET.encode(),
            captured["X-Slack-Request-Timestamp"],
            captured["X-Slack-Signature"],
            body,
            now=at,
        )

    replay(T + 60)  # within the window: accepted (and an answer given twice is "already noted")
    with pytest.raises(si.RefusedRequest, match="stale"):
        replay(T + 6 * 60)
    # Re-dating it does not help: the timestamp is under the signature.
    with pytest.raises(si.RefusedRequest, match="bad"):
        si.verify(
            SECRET.encode(), str(T + 6 * 60), captured["X-Slack-Signature"], body, now=T + 6 * 60
        )


def test_without_a_secret_nothing_is_accepted() -> None:
    with pytest.raises(si.RefusedRequest, match="no signing secret"):
        si.verify(b"", str(T), si.signature(b"", str(T), b""), b"", now=T)


# --- the signing secret setting -----------------------------------------------------------------


def test_slacks_own_secrets_and_generated_ones_are_accepted() -> None:
    assert all(slack_signing_secret_weakness(secrets.token_hex(16)) is None for _ in range(5000))
    assert slack_signing_secret_weakness(new_secret()) is None
    assert Settings(slack_signing_secret=SECRET).slack_signing_secret.get_secret_value() == SECRET


@pytest.mark.parametrize(
    "value",
    [
        "replace-with-your-slack-signing-secret",
        "0123456789abcdef0123456789abcdef",
        "deadbeefdeadbeefdeadbeefdeadbeef",
        "a" * 32,
        "abcabcabcabcabcabcabcabcabcabcab",
        "8f742231b10e8888abcd99yyyzzz85a5",  # Slack's documentation's example
        "changeme",
    ],
)
def test_placeholders_are_refused_as_signing_secret(value: str) -> None:
    assert slack_signing_secret_weakness(value) is not None
    with pytest.raises(ValidationError, match="ROAC_SLACK_SIGNING_SECRET is refused"):
        Settings(slack_signing_secret=value)


# --- the Block Kit ask ---------------------------------------------------------------------------


KEYRING = LinkKeyring.single(b"unit-test-link-key-Zq8mK2pL0vN4xR7tY1wB5cD9")
LINKS = LinkMaker("https://roac.example.org", KEYRING)


def _ask(language: str = "en") -> tuple[str, str, str]:
    """A rendered ask's Slack text and its accept and decline URLs."""
    intro_id = uuid4()
    people = [
        Participant(
            source="crm",
            external_id=str(i),
            name=f"Ada <{i}> & co",
            language=language,
            channels=[ChannelAddress(type=ChannelType.SLACK, address=f"U0{i}AAA")],
        )
        for i in range(2)
    ]
    intro = IntroData(
        proposal_id=intro_id,
        participants=people,
        topics=[IntroTopic(topic="kites", relation=TopicRelation.SHARED)],
        score=1.0,
        reason="r",
    )
    end = NOW.timestamp() + 3600
    accept = LINKS.answer(LinkAction.ACCEPT, intro_id, "crm", "0", end)
    decline = LINKS.answer(LinkAction.DECLINE, intro_id, "crm", "0", end)
    links = Links(accept=Trusted(accept), decline=Trusted(decline), unsubscribe=Trusted(""))
    rendered = MessageRenderer().render(DeliveryKind.ASK, intro, [0], links)
    return rendered.chat[Style.SLACK], accept, decline


def _posted_ask() -> dict[str, Any]:
    text, accept, decline = _ask()
    blocks = ask_blocks(text, accept, decline)
    assert blocks is not None
    return {"channel": "D0AAA", "text": text, "blocks": blocks}


def test_an_ask_has_its_text_and_two_buttons_carrying_the_links_tokens() -> None:
    text, accept, decline = _ask()
    blocks = ask_blocks(text, accept, decline)
    assert blocks is not None
    section, actions = blocks
    assert section["block_id"] == TEXT_BLOCK_ID and section["text"]["type"] == "mrkdwn"
    assert "Ada &lt;0&gt; &amp; co" in section["text"]["text"]  # escaped like the text
    assert accept not in section["text"]["text"] and decline not in section["text"]["text"]
    assert actions["block_id"] == ACTIONS_BLOCK_ID
    yes, no = actions["elements"]
    assert (yes["action_id"], yes["text"]["text"], yes["style"]) == (
        ACCEPT_ACTION,
        "Yes, introduce me",
        "primary",
    )
    assert (no["action_id"], no["text"]["text"]) == (DECLINE_ACTION, "No, thanks")
    assert "style" not in no
    # The values are the web links' own tokens: same claims, same keys.
    assert yes["value"] == link_token(accept) and no["value"] == link_token(decline)
    assert KEYRING.verify(yes["value"], NOW.timestamp()).action is LinkAction.ACCEPT
    assert KEYRING.verify(no["value"], NOW.timestamp()).action is LinkAction.DECLINE


def test_a_german_ask_gets_german_buttons() -> None:
    text, accept, decline = _ask("de")
    blocks = ask_blocks(text, accept, decline)
    assert blocks is not None
    labels = [e["text"]["text"] for e in blocks[1]["elements"]]
    assert labels == ["Ja, stellt uns vor", "Nein, danke"]


def test_no_blocks_when_they_would_not_fit_or_the_links_are_not_roacs() -> None:
    text, accept, decline = _ask()
    assert ask_blocks("x" * 3001, accept, decline) is None
    assert ask_blocks(text, "https://elsewhere.example/a", decline) is None
    assert link_token("https://roac.example.org/links/") is None
    assert link_token("https://roac.example.org/links/a.b") == "a.b"


def _outgoing(kind: DeliveryKind, group: tuple[str, ...] = ()) -> Outgoing:
    text, accept, decline = _ask()
    rendered = Rendered(subject="s", text=text, html="", chat=dict.fromkeys(Style, text))
    return Outgoing(
        delivery_id=uuid4(),
        idempotency_key="k",
        proposal_id=uuid4(),
        kind=kind,
        channel=ChannelType.SLACK,
        address="U0AAA",
        rendered=rendered,
        unsubscribe_url="",
        group=group,
        payload={"links": {"accept": accept, "decline": decline}},
    )


def test_only_an_ask_to_one_person_carries_buttons() -> None:
    assert blocks_for(_outgoing(DeliveryKind.ASK)) is not None
    assert blocks_for(_outgoing(DeliveryKind.INTRO)) is None
    assert blocks_for(_outgoing(DeliveryKind.ASK, group=("U0AAA", "U0BBB"))) is None


# --- the payload ----------------------------------------------------------------------------------


def test_a_click_is_read_from_slacks_block_actions_payload() -> None:
    posted = _posted_ask()
    body = click_body(posted, DECLINE_ACTION, "U0AAA", "https://hooks.slack.com/actions/T/1/x")
    click = si.parse_click(body)
    assert click is not None
    assert click.action_id == DECLINE_ACTION and click.user_id == "U0AAA"
    assert click.token == posted["blocks"][1]["elements"][1]["value"]
    assert click.response_url == "https://hooks.slack.com/actions/T/1/x"
    assert click.message_blocks == posted["blocks"]


def _form(payload: Any) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


@pytest.mark.parametrize(
    "body",
    [
        _form({"type": "view_submission", "view": {}}),
        _form(
            {
                "type": "block_actions",
                "actions": [{"type": "button", "action_id": "x", "value": "t"}],
            }
        ),
        _form(
            {"type": "block_actions", "actions": [{"type": "button", "action_id": ACCEPT_ACTION}]}
        ),
        _form(
            {
                "type": "block_actions",
                "actions": [{"type": "static_select", "action_id": ACCEPT_ACTION, "value": "t"}],
            }
        ),
        _form({"type": "block_actions", "actions": []}),
    ],
)
def test_interactions_that_are_not_our_buttons_are_ignored(body: bytes) -> None:
    assert si.parse_click(body) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"payload=not-json",
        b"payload=%5B%5D",  # a JSON list
        b"token=x",  # no payload
        b"payload=%7B%7D&payload=%7B%7D",  # two
        b"\xff\xfe",
        _form({"type": "block_actions", "actions": "nope"}),
    ],
)
def test_garbage_is_malformed(body: bytes) -> None:
    with pytest.raises(si.MalformedPayload):
        si.parse_click(body)


def test_the_answered_message_keeps_the_text_and_drops_the_buttons() -> None:
    click = si.parse_click(click_body(_posted_ask(), ACCEPT_ACTION, "U0AAA", "https://h/x"))
    assert click is not None
    waiting = si.answered_message(click, AnswerResult(Outcome.ACCEPTED, IntroState.ASKED))
    assert waiting["replace_original"] is True
    assert [b["type"] for b in waiting["blocks"]] == ["section", "context"]
    assert "as soon as everyone said yes" in waiting["text"]
    done = si.answered_message(click, AnswerResult(Outcome.ACCEPTED, IntroState.ACCEPTED))
    assert "Everyone said yes" in done["text"]
    for outcome in Outcome:
        assert si.answered_text(AnswerResult(outcome))


# --- the endpoint -------------------------------------------------------------------------------


class FakeAnswers:
    def __init__(self, result: AnswerResult | Exception, delay: float = 0.0) -> None:
        self.tokens: list[str] = []
        self._result = result
        self._delay = delay

    async def answer(self, token: str) -> AnswerResult:
        self.tokens.append(token)
        await asyncio.sleep(self._delay)
        if isinstance(self._result, Exception):
            raise self._result
        return self._result


class FakeResponder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def respond(self, url: str, message: dict[str, Any]) -> None:
        self.sent.append((url, message))


class FakeCheckins:
    def __init__(self, result: CheckinResult) -> None:
        self.tokens: list[str] = []
        self._result = result

    async def answer(self, token: str, rating: int | None = None) -> CheckinResult:
        self.tokens.append(token)
        return self._result


def _endpoint(
    answers: FakeAnswers, ack_within: float = 2.0, checkins: FakeCheckins | None = None
) -> tuple[TestClient, FakeResponder, FakeClock, SlackButtons]:
    clock = FakeClock(NOW)
    responder = FakeResponder()
    buttons = SlackButtons(
        SECRET.encode(), answers, responder, clock, ack_within=ack_within, checkins=checkins
    )
    app = FastAPI()
    app.state.slack_buttons = buttons
    app.include_router(slack)
    return TestClient(app), responder, clock, buttons


def test_a_signed_click_is_answered_with_its_token_and_the_message_updated() -> None:
    answers = FakeAnswers(AnswerResult(Outcome.ACCEPTED, IntroState.ASKED))
    client, responder, _, _ = _endpoint(answers)
    posted = _posted_ask()
    body = click_body(posted, ACCEPT_ACTION, "U0AAA", "https://hooks.slack.com/actions/1")
    response = client.post(
        "/slack/interactivity",
        content=body,
        headers=signed_headers(body, timestamp=T, secret=SECRET),
    )
    assert response.status_code == 200 and response.content == b""
    assert answers.tokens == [posted["blocks"][1]["elements"][0]["value"]]
    [(url, message)] = responder.sent
    assert url == "https://hooks.slack.com/actions/1" and message["replace_original"] is True


@pytest.mark.parametrize("case", ["bad signature", "stale", "unsigned", "other secret"])
def test_a_bad_signature_or_a_stale_timestamp_gets_401_and_answers_nothing(case: str) -> None:
    answers = FakeAnswers(AnswerResult(Outcome.ACCEPTED))
    client, responder, _, _ = _endpoint(answers)
    body = click_body(_posted_ask(), ACCEPT_ACTION, "U0AAA", "https://hooks.slack.com/actions/1")
    headers = {
        "bad signature": {
            **signed_headers(body, timestamp=T, secret=SECRET),
            "X-Slack-Signature": "v0=" + "0" * 64,
        },
        "stale": signed_headers(body, timestamp=T - 301, secret=SECRET),
        "unsigned": {"Content-Type": "application/x-www-form-urlencoded"},
        "other secret": signed_headers(body, timestamp=T, secret=secrets.token_hex(16)),
    }[case]
    response = client.post("/slack/interactivity", content=body, headers=headers)
    assert response.status_code == 401
    assert answers.tokens == [] and responder.sent == []


def test_a_replayed_click_after_the_window_gets_401() -> None:
    answers = FakeAnswers(AnswerResult(Outcome.ACCEPTED))
    client, _, clock, _ = _endpoint(answers)
    body = click_body(_posted_ask(), ACCEPT_ACTION, "U0AAA", "https://hooks.slack.com/actions/1")
    headers = signed_headers(body, timestamp=T, secret=SECRET)
    assert client.post("/slack/interactivity", content=body, headers=headers).status_code == 200
    clock.set(NOW + timedelta(minutes=6))
    assert client.post("/slack/interactivity", content=body, headers=headers).status_code == 401
    assert len(answers.tokens) == 1


def test_signed_garbage_is_400_and_other_interactions_are_acknowledged() -> None:
    answers = FakeAnswers(AnswerResult(Outcome.ACCEPTED))
    client, responder, _, _ = _endpoint(answers)
    for body, status in [(b"payload=nope", 400), (_form({"type": "shortcut"}), 200)]:
        headers = signed_headers(body, timestamp=T, secret=SECRET)
        assert (
            client.post("/slack/interactivity", content=body, headers=headers).status_code == status
        )
    assert answers.tokens == [] and responder.sent == []


def test_a_slow_answer_is_acknowledged_in_time_and_the_message_updated_after() -> None:
    answers = FakeAnswers(AnswerResult(Outcome.DECLINED), delay=0.5)
    client, responder, _, buttons = _endpoint(answers, ack_within=0.05)
    body = click_body(_posted_ask(), DECLINE_ACTION, "U0AAA", "https://hooks.slack.com/actions/1")
    headers = signed_headers(body, timestamp=T, secret=SECRET)
    with client:  # one event loop across the request and the wait below
        response = client.post("/slack/interactivity", content=body, headers=headers)
        assert response.status_code == 200
        assert responder.sent == []  # acknowledged before the answer was done
        assert client.portal is not None
        client.portal.call(buttons.drain)
    [(_, message)] = responder.sent
    assert "This introduction ends here" in message["text"]


def test_an_answer_that_fails_tells_the_clicker_and_keeps_the_buttons() -> None:
    answers = FakeAnswers(ConnectionError("database away"))
    client, responder, _, _ = _endpoint(answers)
    body = click_body(_posted_ask(), ACCEPT_ACTION, "U0AAA", "https://hooks.slack.com/actions/1")
    headers = signed_headers(body, timestamp=T, secret=SECRET)
    assert client.post("/slack/interactivity", content=body, headers=headers).status_code == 200
    [(_, message)] = responder.sent
    assert message["replace_original"] is False and "could not be recorded" in message["text"]


# --- check-ins ("did you meet?") -----------------------------------------------------------------


def _checkin(kind: DeliveryKind = DeliveryKind.CHECKIN, language: str | None = None) -> Outgoing:
    """A check-in to the first of two people in Slack, rendered as the notifier renders it."""
    people = [
        Participant(
            source="crm",
            external_id=str(i),
            name=f"Ada {i}",
            language=language,
            channels=[ChannelAddress(type=ChannelType.SLACK, address=f"U0{i}AAA")],
        )
        for i in range(2)
    ]
    data = IntroData(
        proposal_id=uuid4(),
        participants=people,
        topics=[IntroTopic(topic="kites", relation=TopicRelation.SHARED)],
        score=1.0,
        reason="r",
    )
    intro = IntroRecord(
        data.proposal_id, "double_opt_in", IntroState.INTRODUCED, data, "c", NOW, None
    )
    delivery = DeliveryRecord(
        id=uuid4(),
        proposal_id=intro.id,
        kind=kind,
        positions=(0,),
        recipient_source="crm",
        recipient_external_id="0",
        channel="slack",
        channel_index=0,
        status="pending",
        attempts=0,
        generation=0,
        not_before=NOW,
    )
    unsubscribe = LINKS.unsubscribe("crm", "0", NOW.timestamp())
    return checkin_outgoing(
        MessageRenderer(),
        LINKS,
        intro,
        delivery,
        ChannelType.SLACK,
        "U00AAA",
        unsubscribe,
        NOW.timestamp(),
    )


def test_a_check_in_carries_four_buttons_with_its_links_tokens_and_keeps_its_footer() -> None:
    out = _checkin()
    blocks = blocks_for(out)
    assert blocks is not None and [b["type"] for b in blocks] == ["section", "actions"]
    links = out.payload["links"]
    buttons = blocks[1]["elements"]
    assert [(b["action_id"], b["text"]["text"]) for b in buttons] == [
        ("roac.checkin_met", "We met"),
        ("roac.checkin_not_yet", "Not yet"),
        ("roac.checkin_didnt_happen", "It didn't happen"),
        ("roac.checkin_not_for_me", "Not for me"),
    ]
    assert {b["action_id"] for b in buttons} == CHECKIN_ACTIONS
    for button, key in zip(buttons, ["met", "not_yet", "didnt_happen", "not_for_me"], strict=True):
        assert button["value"] == link_token(links[key])
    assert KEYRING.verify(buttons[0]["value"], NOW.timestamp()).action is LinkAction.CHECKIN_MET
    body = blocks[0]["text"]["text"]
    assert links["met"] not in body and links["not_for_me"] not in body
    # The footer stays in the message: unsubscribe and the person's preferences page.
    assert links["unsubscribe"] in body and links["preferences"] in body


def test_the_reminder_offers_no_second_not_yet_and_german_check_ins_get_german_buttons() -> None:
    again = blocks_for(_checkin(DeliveryKind.CHECKIN_AGAIN))
    assert again is not None
    assert "roac.checkin_not_yet" not in [b["action_id"] for b in again[1]["elements"]]
    german = blocks_for(_checkin(language="de"))
    assert german is not None
    assert [b["text"]["text"] for b in german[1]["elements"]] == [
        "Wir haben uns getroffen",
        "Noch nicht",
        "Es hat nicht geklappt",
        "Nicht für mich",
    ]


def test_a_check_in_click_is_answered_by_the_check_ins_and_the_message_shows_the_answer() -> None:
    answers = FakeAnswers(AnswerResult(Outcome.ACCEPTED))
    rate = LINKS.url(
        LinkClaim(LinkAction.CHECKIN_RATE, "crm", "0", T + 3600, uuid4())  # the rating page
    )
    checkins = FakeCheckins(CheckinResult(Verdict.NOTED, CheckinState.MET, Reply.MET, rate))
    client, responder, _, _ = _endpoint(answers, checkins=checkins)
    out = _checkin()
    blocks = blocks_for(out)
    assert blocks is not None
    posted = {"channel": "D0AAA", "text": out.rendered.chat[Style.SLACK], "blocks": blocks}
    body = click_body(posted, "roac.checkin_met", "U00AAA", "https://hooks.slack.com/actions/2")
    headers = signed_headers(body, timestamp=T, secret=SECRET)
    assert client.post("/slack/interactivity", content=body, headers=headers).status_code == 200
    # The same use case as the web link, with the button's token; the ask's use case untouched.
    assert checkins.tokens == [link_token(out.payload["links"]["met"])] and answers.tokens == []
    [(url, message)] = responder.sent
    assert url == "https://hooks.slack.com/actions/2" and message["replace_original"] is True
    assert "glad to hear it" in message["text"] and f"<{rate}|" in message["text"]
    assert [b["type"] for b in message["blocks"]] == ["section", "context"]  # no buttons


def test_every_check_in_outcome_has_words() -> None:
    for reply in Reply:
        text = si.checkin_answered_text(CheckinResult(Verdict.NOTED, None, reply))
        assert text and "|" not in text
    for outcome in [*Verdict, "invalid", "expired", "erased"]:
        assert si.checkin_answered_text(CheckinResult(str(outcome)))


# --- the Slack app manifest ----------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
# What each Slack Web API method the notifier calls needs (api.slack.com/methods).
SCOPES_OF = {"chat.postMessage": {"chat:write"}, "conversations.open": {"im:write", "mpim:write"}}


def test_the_manifest_asks_for_exactly_the_scopes_the_notifier_uses() -> None:
    code = (ROOT / "services" / "notifier" / "channels" / "http.py").read_text()
    called = set(re.findall(r'self\._call\("([a-zA-Z.]+)"', code))
    assert called == set(SCOPES_OF), "a new Slack method: add its scopes to the manifest"
    manifest = yaml.safe_load((ROOT / "deploy" / "slack" / "manifest.yaml").read_text())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == set().union(*SCOPES_OF.values())
    assert "user" not in manifest["oauth_config"]["scopes"]
    interactivity = manifest["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    assert interactivity["request_url"].endswith("/slack/interactivity")
