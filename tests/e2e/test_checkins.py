""" "Did you meet?" check-ins end to end, against the three live services (double opt-in, a
check-in ROAC_CHECKIN_AFTER_SECONDS, an hour here, after the introduction), on a clock the test
moves: the notifier reads ROAC_CLOCK_OFFSET_FILE, so nothing is sent before the delay, and the
check-in goes once the clock is moved past it, once. Each participant gets one check-in by
email, with the link to their preferences page in its footer; *we met* (and its rating) reaches
the matcher's feedback through RabbitMQ and counts a meeting for the topic (what raises its
weight in scoring); *not for me* declines the pair for good; *not yet* asks once more, an hour
later on that clock, and then never again; an erased person gets none.

The clock only moves forward, across the module's tests: the first test is the one that sees
the hour before the delay (the check-ins' start is the database's real time)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.notifier.links import LinkAction, LinkKeyring
from shared.settings import Settings
from tests.e2e.conftest import Stack, new_person, run_id, running_stack
from tests.support.infra import API_KEY

pytestmark = pytest.mark.e2e

CHECKIN_AFTER_SECONDS = 3600
SWEEP_SECONDS = 0.5
# Long enough for several sweeps of the notifier to have looked (and sent nothing).
SEVERAL_SWEEPS = 8 * SWEEP_SECONDS


@dataclass
class MovedClock:
    """The notifier's clock offset (ROAC_CLOCK_OFFSET_FILE), moved forward by the tests."""

    path: Path
    offset: float = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        # Written whole, then renamed: the notifier never reads half a number.
        part = self.path.with_suffix(".part")
        part.write_text(f"{self.offset}\n")
        part.replace(self.path)

    def past_the_delay(self) -> None:
        self.advance(CHECKIN_AFTER_SECONDS + 1)


@dataclass
class CheckinStack:
    stack: Stack
    clock: MovedClock


@pytest.fixture(scope="module")
def checkin_stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[CheckinStack]:
    clock = MovedClock(tmp_path_factory.mktemp("checkin-clock") / "offset")
    clock.advance(0)
    with running_stack(
        "checkins",
        tmp_path_factory.mktemp("checkin-logs"),
        request,
        ROAC_INTRO_MODE="double_opt_in",
        ROAC_MATCH_MIN_SCORE="0.1",  # any shared topic will do
        ROAC_QUIET_HOURS_ENABLED="false",
        ROAC_CHECKIN_AFTER_SECONDS=CHECKIN_AFTER_SECONDS,
        ROAC_EXPIRY_SWEEP_SECONDS=str(SWEEP_SECONDS),
        ROAC_CLOCK_OFFSET_FILE=str(clock.path),
    ) as stack:
        yield CheckinStack(stack, clock)


def _link(text: str, label: str) -> str:
    found = re.search(rf"{label}:\s+(\S+)", text)
    assert found, text
    return found[1]


def _introduced(stack: Stack, people: list[dict[str, Any]], topic: str) -> list[str]:
    """Contacts and a shared topic; both say yes to their ask; the introductions arrive.
    Returns each person's email address."""
    with stack.client() as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        for person in people:
            body = {"source": "e2e", "external_id": person["external_id"], "topic": topic}
            assert client.post("/v1/interests", json=body).status_code == 202
    emails = [p["email"] for p in people]
    for email in emails:
        ask = stack.sink.wait_for(email, within=15)[0]  # newest first
        assert "Thank you" in httpx.post(_link(ask.text, "Yes, introduce me")).text
    for email in emails:
        stack.sink.wait_for(email, count=2, within=15)
    return emails


def _intro(stack: Stack, external_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.notifier_url}/v1/intros",
        headers={"Authorization": f"Bearer {API_KEY}"},
        params={"limit": 200},
    )
    assert response.status_code == 200, response.text
    for intro in response.json()["intros"]:
        if any(p["external_id"] == external_id for p in intro["participants"]):
            return dict(intro)
    raise AssertionError(f"no introduction of {external_id}")


def _names(stack: Stack, external_id: str) -> bool:
    """Whether an introduction the notifier lists still names this person."""
    try:
        _intro(stack, external_id)
    except AssertionError:
        return False
    return True


def _query(stack: Stack, sql: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.infra.database_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def _eventually(check: Any, within: float = 15) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def _preferences_claim(stack: Stack, url: str) -> tuple[LinkAction, str, str]:
    """What a preferences link's token says, read with the stack's own link keys."""
    keys = Settings(link_keys=stack.env["ROAC_LINK_KEYS"]).link_keyring
    keyring = LinkKeyring([(key_id, secret.encode()) for key_id, secret in keys])
    claim = keyring.verify(url.rsplit("/preferences/", 1)[1], time.time() + 24 * 3600)
    return claim.action, claim.source, claim.external_id


def test_each_gets_one_check_in_after_the_delay_and_the_answers_reach_the_matcher(
    checkin_stack: CheckinStack,
) -> None:
    stack, clock = checkin_stack.stack, checkin_stack.clock
    assert clock.offset == 0, "the first test of the module: the hour before the delay"
    run = run_id()
    people = [new_person(run, i) for i in range(2)]
    topic = f"lichens {run}"
    emails = _introduced(stack, people, topic)
    # Before the delay: the sweeps look and send nothing.
    time.sleep(SEVERAL_SWEEPS)
    assert [len(stack.sink.to(e)) for e in emails] == [2, 2]
    clock.past_the_delay()
    checkins = [stack.sink.wait_for(e, count=3, within=20)[0] for e in emails]
    for i, mail in enumerate(checkins):
        assert "Did you meet" in mail.subject and people[1 - i]["name"] in mail.subject
    # Sent once: more sweeps, and more time, send nothing more.
    time.sleep(SEVERAL_SWEEPS)
    assert [len(stack.sink.to(e)) for e in emails] == [3, 3]
    proposal = _intro(stack, people[0]["external_id"])["id"]

    # The footer links to the person's own preferences page, as every message does.
    preferences = _link(checkins[0].text, "Your preferences")
    assert "your preferences" in checkins[0].html and preferences in checkins[0].html
    assert _preferences_claim(stack, preferences) == (
        LinkAction.PREFERENCES,
        "e2e",
        people[0]["external_id"],
    )
    page = httpx.get(preferences)
    assert page.status_code == 200 and "<h1>Your preferences</h1>" in page.text

    # We met: a page with a button (a GET only asks), then the answer and a rating form.
    met = _link(checkins[0].text, "We met")
    page = httpx.get(met)
    assert page.status_code == 200 and '<form method="post"' in page.text
    answered = httpx.post(met)
    assert answered.status_code == 200 and "Glad you met" in answered.text
    rate_action = re.search(r'<form method="post" action="(/links/[^"]+)"', answered.text)
    assert rate_action and 'name="rating"' in answered.text
    base = met.split("/links/")[0]
    rated = httpx.post(base + rate_action[1], data={"rating": "5"})
    assert rated.status_code == 200 and "with your rating" in rated.text
    assert "Already noted" in httpx.post(met).text  # clicked twice

    # Not for me, from the other person: the pair is declined for good.
    assert "never introduce" in httpx.post(_link(checkins[1].text, "Not for me")).text

    intro = _intro(stack, people[0]["external_id"])
    # Seats are in the proposal's order: who answered what, by position.
    seat = {p["external_id"]: i for i, p in enumerate(intro["participants"])}
    first, second = (seat[p["external_id"]] for p in people)

    def matcher_feedback() -> dict[int, tuple[str, int | None]]:
        rows = _query(
            stack,
            "SELECT respondent, outcome, rating FROM matcher.feedback WHERE proposal_id = $1",
            proposal,
        )
        found = {r["respondent"]: (r["outcome"], r["rating"]) for r in rows}
        return found if len(found) == 2 and found[first][1] is not None else {}

    assert _eventually(matcher_feedback) == {first: ("met", 5), second: ("declined", None)}
    # The topic counts one meeting (scoring's topic_boost), whatever the rating event did.
    meetings = _query(stack, "SELECT meetings FROM matcher.topics WHERE name = $1", topic)
    assert [r["meetings"] for r in meetings] == [1]
    declined = _query(
        stack,
        "SELECT g.declined FROM matcher.groups g JOIN matcher.proposals p "
        "ON p.group_key = g.group_key WHERE p.id = $1",
        proposal,
    )
    assert [r["declined"] for r in declined] == [True]

    # The operator sees each check-in's state per introduction.
    listed = _intro(stack, people[0]["external_id"])["checkins"]
    assert {c["position"]: (c["state"], c["rating"]) for c in listed} == {
        first: ("met", 5),
        second: ("not_for_me", None),
    }
    # Nobody gets a second check-in for the same introduction, however late it gets.
    clock.past_the_delay()
    time.sleep(SEVERAL_SWEEPS)
    assert [len(stack.sink.to(e)) for e in emails] == [3, 3]


def test_not_yet_asks_once_more_and_then_never_again(checkin_stack: CheckinStack) -> None:
    stack, clock = checkin_stack.stack, checkin_stack.clock
    run = run_id()
    people = [new_person(run, i) for i in range(2)]
    emails = _introduced(stack, people, f"mosses {run}")
    clock.past_the_delay()
    first = stack.sink.wait_for(emails[0], count=3, within=20)[0]
    assert "Noted" in httpx.post(_link(first.text, "Not yet")).text
    # Asked once more as long after the "not yet": not before.
    time.sleep(SEVERAL_SWEEPS)
    assert len(stack.sink.to(emails[0])) == 3
    clock.past_the_delay()
    again = stack.sink.wait_for(emails[0], count=4, within=20)[0]
    assert "Once more" in again.subject and "Not yet:" not in again.text
    assert "Thank you" in httpx.post(_link(again.text, "It didn't happen")).text
    clock.past_the_delay()
    time.sleep(SEVERAL_SWEEPS)
    assert len(stack.sink.to(emails[0])) == 4
    intro = _intro(stack, people[0]["external_id"])
    seat = [p["external_id"] for p in intro["participants"]].index(people[0]["external_id"])
    assert intro["checkins"][seat]["state"] == "didnt_happen"
    feedback = _eventually(
        lambda: _query(
            stack,
            "SELECT outcome FROM matcher.feedback f JOIN matcher.proposals p "
            "ON p.id = f.proposal_id WHERE p.id = $1",
            intro["id"],
        )
    )
    assert [r["outcome"] for r in feedback] == ["did_not_meet"]


def test_an_erased_person_gets_no_check_in(checkin_stack: CheckinStack) -> None:
    stack, clock = checkin_stack.stack, checkin_stack.clock
    run = run_id()
    people = [new_person(run, i) for i in range(2)]
    emails = _introduced(stack, people, f"ferns {run}")
    with stack.client() as client:
        erased = client.delete(f"/v1/contacts/e2e/{people[0]['external_id']}")
        assert erased.status_code == 202
    # The erasure reaches the notifier (which scrubs them from the introduction) first.
    assert _eventually(lambda: not _names(stack, people[0]["external_id"]))
    clock.past_the_delay()
    time.sleep(SEVERAL_SWEEPS)
    # Nothing more about an introduction naming an erased person, to anyone.
    assert [len(stack.sink.to(e)) for e in emails] == [2, 2]
