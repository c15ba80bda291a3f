"""Slack buttons end to end: the three services as processes, Slack app mode against the local
fake Slack (tests/support/fake_providers.py), which checks the Block Kit it receives, and clicks
made as Slack makes them (tests/support/fake_slack.py: a signed block_actions payload POSTed to
the notifier's public interactivity URL). Two people are asked with buttons, both click *Yes,
introduce me*, each message is updated through its response_url, and the introduction follows
in one group DM; a request with a bad signature or a stale timestamp gets 401. Then "did you
meet?": each gets a check-in in their DM with four buttons, the fake Slack clicks *We met*, the
message shows the answer, and the matcher receives the feedback (through the same use case and
event, intro.feedback_given.v1, as the check-in's web link)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest

from services.notifier.channels.slack_blocks import ACCEPT_ACTION, CHECKIN_ACTIONS, DECLINE_ACTION
from tests.e2e.conftest import Stack, new_person, run_id, running_stack
from tests.support.fake_providers import SLACK_TOKEN, ProviderServer, Received, fake_providers
from tests.support.fake_slack import SLACK_SIGNING_SECRET, click_body, signed_headers
from tests.support.infra import API_KEY, WEBHOOK_SIGNING_KEY

pytestmark = pytest.mark.e2e

CHECKIN_AFTER_SECONDS = 2
CHECKIN_MET = "roac.checkin_met"


@pytest.fixture(scope="module")
def providers() -> Iterator[ProviderServer]:
    with fake_providers(WEBHOOK_SIGNING_KEY.encode()) as server:
        yield server


@pytest.fixture(scope="module")
def slack_stack(
    providers: ProviderServer,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    with running_stack(
        "slack",
        tmp_path_factory.mktemp("slack-logs"),
        request,
        ROAC_INTRO_MODE="double_opt_in",
        ROAC_MATCH_MIN_SCORE="0.1",
        ROAC_QUIET_HOURS_ENABLED="false",
        ROAC_SLACK_BOT_TOKEN=SLACK_TOKEN,
        ROAC_SLACK_API_URL=f"{providers.url}/slack/api",
        ROAC_SLACK_SIGNING_SECRET=SLACK_SIGNING_SECRET,
        # The fake Slack's response_url is on 127.0.0.1 (Slack's: hooks.slack.com).
        ROAC_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        # "Did you meet?" seconds after an introduction (7 days by default).
        ROAC_CHECKIN_AFTER_SECONDS=CHECKIN_AFTER_SECONDS,
        ROAC_EXPIRY_SWEEP_SECONDS="0.5",
    ) as stack:
        yield stack


def _slack_person(run: str, index: int) -> dict[str, Any]:
    person = new_person(run, index)
    del person["email"]  # Slack only
    person["channels"] = [{"type": "slack", "address": f"U{run.upper()}{index}"}]
    return person


def _introduce(stack: Stack, people: list[dict[str, Any]], topic: str) -> None:
    with stack.client() as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        items = [
            {"source": "e2e", "external_id": p["external_id"], "topic": topic, "kind": "likes"}
            for p in people
        ]
        assert client.post("/v1/interests", json={"items": items}).status_code == 202


def _posts(providers: ProviderServer, channel: str) -> list[Received]:
    return [
        r
        for r in providers.state.at("/slack/api/chat.postMessage")
        if r.body.get("channel") == channel
    ]


def _wait(what: str, found: Any, within: float = 15) -> Any:
    deadline = time.monotonic() + within
    while not (result := found()):
        assert time.monotonic() < deadline, f"waited {within} s for {what}"
        time.sleep(0.2)
    return result


def _dm(user: str) -> str:
    return "D" + user[:20]  # the fake Slack's conversations.open: D + sorted members


def _click(
    stack: Stack, providers: ProviderServer, message: dict[str, Any], action: str, user: str
) -> tuple[httpx.Response, str]:
    response_path = f"/slack/response/{uuid4().hex}"
    body = click_body(message, action, user, providers.url + response_path)
    response = httpx.post(
        f"{stack.env['ROAC_PUBLIC_URL']}/slack/interactivity",
        content=body,
        headers=signed_headers(body),
        timeout=10,
    )
    return response, response_path


def _intro(stack: Stack, external_id: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{stack.notifier_url}/v1/intros",
        headers={"Authorization": f"Bearer {API_KEY}"},
        params={"limit": 200},
    )
    for intro in response.json()["intros"]:
        if any(p["external_id"] == external_id for p in intro["participants"]):
            return dict(intro)
    return None


def _intro_state(stack: Stack, external_id: str) -> str | None:
    intro = _intro(stack, external_id)
    return str(intro["state"]) if intro else None


def _feedback(stack: Stack, proposal_id: str) -> list[tuple[int, str]]:
    async def run() -> list[tuple[int, str]]:
        conn = await asyncpg.connect(stack.infra.database_url)
        try:
            rows = await conn.fetch(
                "SELECT respondent, outcome FROM matcher.feedback WHERE proposal_id = $1::uuid",
                proposal_id,
            )
        finally:
            await conn.close()
        return [(r["respondent"], r["outcome"]) for r in rows]

    return asyncio.run(run())


def _checkin_post(providers: ProviderServer, user: str) -> dict[str, Any] | None:
    """The check-in posted to `user`'s DM: the message whose buttons are a check-in's."""
    for posted in _posts(providers, _dm(user)):
        actions = [
            e["action_id"]
            for b in posted.body.get("blocks", [])
            if b.get("type") == "actions"
            for e in b["elements"]
        ]
        if CHECKIN_MET in actions:
            return dict(posted.body)
    return None


def test_both_click_yes_in_slack_and_the_introduction_follows_in_a_group_dm(
    slack_stack: Stack, providers: ProviderServer
) -> None:
    run = run_id()
    people = [_slack_person(run, i) for i in range(2)]
    users = [p["channels"][0]["address"] for p in people]
    _introduce(slack_stack, people, f"kite aerial photography {run}")

    asks = [
        _wait(f"the ask to {user}", lambda user=user: _posts(providers, _dm(user)))[0].body
        for user in users
    ]
    for ask, person in zip(asks, people, strict=True):
        assert [b["type"] for b in ask["blocks"]] == ["section", "actions"]
        labels = [e["text"]["text"] for e in ask["blocks"][1]["elements"]]
        assert labels == ["Yes, introduce me", "No, thanks"]
        assert "/links/" in ask["text"]  # the text fallback keeps the web links
        assert people[1 - people.index(person)]["name"] not in ask["text"]  # names nobody

    first, first_update = _click(slack_stack, providers, asks[0], ACCEPT_ACTION, users[0])
    assert first.status_code == 200
    [update] = _wait("the first update", lambda: providers.state.at(first_update))
    assert update.body["replace_original"] is True
    assert "as soon as everyone said yes" in update.body["text"]
    assert [b["type"] for b in update.body["blocks"]] == ["section", "context"]  # no buttons
    time.sleep(1)
    assert _intro_state(slack_stack, people[0]["external_id"]) == "asked"

    second, second_update = _click(slack_stack, providers, asks[1], ACCEPT_ACTION, users[1])
    assert second.status_code == 200
    [update] = _wait("the second update", lambda: providers.state.at(second_update))
    assert "Everyone said yes" in update.body["text"]

    group = _dm("".join(sorted(users)))
    [intro] = _wait("the group DM", lambda: _posts(providers, group))
    opened = [
        r.body["users"]
        for r in providers.state.at("/slack/api/conversations.open")
        if set(r.body["users"].split(",")) == set(users)
    ]
    assert len(opened) == 1
    assert people[0]["name"] in intro.body["text"] and people[1]["name"] in intro.body["text"]
    assert "blocks" not in intro.body  # an introduction has nothing to answer
    _wait("introduced", lambda: _intro_state(slack_stack, people[0]["external_id"]) == "introduced")

    # Clicking again (the old message in another client): already noted, nothing sent again.
    again, again_update = _click(slack_stack, providers, asks[0], ACCEPT_ACTION, users[0])
    assert again.status_code == 200
    [update] = _wait("the repeat's update", lambda: providers.state.at(again_update))
    assert "Already noted" in update.body["text"]
    time.sleep(1)
    assert len(_posts(providers, group)) == 1


def test_no_thanks_in_slack_ends_the_introduction(
    slack_stack: Stack, providers: ProviderServer
) -> None:
    run = run_id()
    people = [_slack_person(run, i) for i in range(2)]
    users = [p["channels"][0]["address"] for p in people]
    _introduce(slack_stack, people, f"bookbinding {run}")
    ask = _wait("the ask", lambda: _posts(providers, _dm(users[0])))[0].body
    response, update_path = _click(slack_stack, providers, ask, DECLINE_ACTION, users[0])
    assert response.status_code == 200
    [update] = _wait("the update", lambda: providers.state.at(update_path))
    assert "nobody is told" in update.body["text"]
    _wait("declined", lambda: _intro_state(slack_stack, people[0]["external_id"]) == "declined")


def test_a_bad_signature_or_a_stale_timestamp_gets_401_and_changes_nothing(
    slack_stack: Stack, providers: ProviderServer
) -> None:
    run = run_id()
    people = [_slack_person(run, i) for i in range(2)]
    users = [p["channels"][0]["address"] for p in people]
    _introduce(slack_stack, people, f"lichenology {run}")
    ask = _wait("the ask", lambda: _posts(providers, _dm(users[0])))[0].body
    url = f"{slack_stack.env['ROAC_PUBLIC_URL']}/slack/interactivity"
    body = click_body(ask, ACCEPT_ACTION, users[0], f"{providers.url}/slack/response/{run}")
    now = int(time.time())
    refused = {
        "another secret": signed_headers(body, secret="0f" * 16),
        "tampered body": {**signed_headers(body), "X-Slack-Signature": "v0=" + "ab" * 32},
        "stale": signed_headers(body, timestamp=now - 6 * 60),
        "from the future": signed_headers(body, timestamp=now + 6 * 60),
        "unsigned": {"Content-Type": "application/x-www-form-urlencoded"},
    }
    for case, headers in refused.items():
        assert httpx.post(url, content=body, headers=headers).status_code == 401, case
    # The same body re-signed with a fresh timestamp and the right secret is accepted: the
    # refusals were about the signature, nothing else.
    time.sleep(1)
    assert _intro_state(slack_stack, people[0]["external_id"]) == "asked"
    assert providers.state.at(f"/slack/response/{run}") == []
    assert httpx.post(url, content=body, headers=signed_headers(body)).status_code == 200
    _wait("the update", lambda: providers.state.at(f"/slack/response/{run}"))


def test_did_you_meet_in_slack_we_met_reaches_the_matcher(
    slack_stack: Stack, providers: ProviderServer
) -> None:
    run = run_id()
    people = [_slack_person(run, i) for i in range(2)]
    users = [p["channels"][0]["address"] for p in people]
    _introduce(slack_stack, people, f"sourdough {run}")
    asks = [
        _wait(f"the ask to {user}", lambda user=user: _posts(providers, _dm(user)))[0].body
        for user in users
    ]
    for ask, user in zip(asks, users, strict=True):
        assert _click(slack_stack, providers, ask, ACCEPT_ACTION, user)[0].status_code == 200
    _wait("introduced", lambda: _intro_state(slack_stack, people[0]["external_id"]) == "introduced")

    # A few seconds later, each gets "did you meet?" in their DM, with the four buttons.
    checkins = [
        _wait(f"the check-in to {user}", lambda user=user: _checkin_post(providers, user), 20)
        for user in users
    ]
    for checkin, person in zip(checkins, people, strict=True):
        assert [b["type"] for b in checkin["blocks"]] == ["section", "actions"]
        buttons = checkin["blocks"][1]["elements"]
        assert {b["action_id"] for b in buttons} == CHECKIN_ACTIONS
        assert buttons[0]["text"]["text"] == "We met"
        other = people[1 - people.index(person)]["name"]
        assert "Did you meet?" in checkin["text"] and other in checkin["text"]
        # The text keeps the web links (the fallback) and the footer's preferences page.
        assert "/links/" in checkin["text"] and "/preferences/" in checkin["text"]
        assert "/preferences/" in checkin["blocks"][0]["text"]["text"]

    response, update_path = _click(slack_stack, providers, checkins[0], CHECKIN_MET, users[0])
    assert response.status_code == 200
    [update] = _wait("the check-in's update", lambda: providers.state.at(update_path))
    assert update.body["replace_original"] is True
    assert "glad to hear it" in update.body["text"]
    assert "/links/" in update.body["text"]  # the optional rating's page
    assert [b["type"] for b in update.body["blocks"]] == ["section", "context"]  # no buttons

    intro = _intro(slack_stack, people[0]["external_id"])
    assert intro is not None
    seat = [p["external_id"] for p in intro["participants"]].index(people[0]["external_id"])
    assert _wait("the matcher's feedback", lambda: _feedback(slack_stack, intro["id"])) == [
        (seat, "met")
    ]
    # The operator sees the answer on the introduction's check-ins (the other still asked).
    listed = _intro(slack_stack, people[0]["external_id"])
    assert listed is not None
    states = {c["position"]: c["state"] for c in listed["checkins"]}
    assert states == {seat: "met", 1 - seat: "sent"}
    # Clicked again: already noted, the matcher's feedback unchanged.
    again, again_path = _click(slack_stack, providers, checkins[0], CHECKIN_MET, users[0])
    assert again.status_code == 200
    [update] = _wait("the repeat's update", lambda: providers.state.at(again_path))
    assert "Already noted" in update.body["text"]
    assert _feedback(slack_stack, intro["id"]) == [(seat, "met")]
