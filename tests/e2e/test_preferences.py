"""A person's preferences page end to end, against the live services: the link in the footer of
their message, a pause of two weeks that live matching then honours (and ending it), a lower
weekly cap that holds, a monthly cap that holds in a round, the order of their channels
deciding the channel of their next message, an interest added on the page leading to an
introduction and one removed no longer matching, opting back in after unsubscribing (recorded,
and applied by the matcher), and the page refusing forged, expired and foreign tokens."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.notifier.links import LinkAction, LinkClaim, LinkKeyring
from tests.e2e.conftest import Stack, new_person, run_id, running_stack
from tests.support.fake_providers import ProviderServer, fake_providers
from tests.support.infra import API_KEY, WEBHOOK_SIGNING_KEY
from tests.support.reader_key import READER_ENV, grant_reader
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def providers() -> Iterator[ProviderServer]:
    """A local webhook receiver: a second channel besides email."""
    with fake_providers(WEBHOOK_SIGNING_KEY.encode()) as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """Direct introductions; any shared topic will do for a live match. The notifier reads
    people back from the matcher with its own key, scoped to `contacts:read`."""
    with running_stack(
        "prefs",
        tmp_path_factory.mktemp("prefs-logs"),
        request,
        ROAC_INTRO_MODE="direct",
        ROAC_MATCH_MIN_SCORE="0.1",
        ROAC_QUIET_HOURS_ENABLED="false",
        ROAC_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        **READER_ENV,
    ) as created:
        grant_reader(created.infra.database_url)
        yield created


def _introduce(stack: Stack, people: list[dict[str, Any]], topic: str) -> None:
    with stack.client() as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        for person in people:
            body = {"source": "e2e", "external_id": person["external_id"], "topic": topic}
            assert client.post("/v1/interests", json=body).status_code == 202


def _preferences_link(text: str) -> str:
    found = re.search(r"Your preferences:\s+(\S+)", text)
    assert found, text
    return found[1]


def _profile(stack: Stack, external_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.matcher_url}/v1/contacts/e2e/{external_id}/profile",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _sql(stack: Stack, statement: str, *args: Any) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(stack.infra.database_url)
        try:
            return await conn.fetchrow(statement, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def _first_intro(stack: Stack, run: str) -> tuple[list[dict[str, Any]], str]:
    """Two people introduced; the first one's preferences link, from their email's footer."""
    people = [new_person(run, 0), new_person(run, 1)]
    _introduce(stack, people, f"paper kites {run}")
    mail = stack.sink.wait_for(people[0]["email"], within=15)[0]
    assert 'href="http' in mail.html and "your preferences" in mail.html
    return people, _preferences_link(mail.text)


def test_a_two_week_pause_is_honoured_by_live_matching_until_it_ends(stack: Stack) -> None:
    run = run_id()
    people, link = _first_intro(stack, run)
    page = httpx.get(link)
    assert page.status_code == 200 and "Your preferences" in page.text
    assert '<html lang="en">' in page.text and "<main>" in page.text
    saved = httpx.post(link, data={"pause": "2", "per_week": "", "language": "en"})
    assert saved.status_code == 303
    shown = httpx.get(saved.headers["location"] if "://" in saved.headers["location"] else link)
    assert "Introductions are paused until" in shown.text
    two_weeks = datetime.now(UTC) + timedelta(weeks=2)

    def paused() -> bool:
        until = _profile(stack, people[0]["external_id"])["snoozed_until"]
        return until is not None and abs(datetime.fromisoformat(until) - two_weeks).days == 0

    eventually(paused)
    # A newcomer sharing a rare topic with them: nobody is introduced while they pause.
    newcomer = new_person(run, 2)
    _introduce(stack, [newcomer], f"tin whistles {run}")
    with stack.client() as client:
        body = {
            "source": "e2e",
            "external_id": people[0]["external_id"],
            "topic": f"tin whistles {run}",
        }
        assert client.post("/v1/interests", json=body).status_code == 202
    time.sleep(3)
    assert len(stack.sink.to(people[0]["email"])) == 1
    assert stack.sink.to(newcomer["email"]) == []
    # Ending the pause: the next match introduces them again.
    assert httpx.post(link, data={"pause": "none"}).status_code == 303
    eventually(lambda: _profile(stack, people[0]["external_id"])["snoozed_until"] is None)
    latecomer = new_person(run, 3)
    _introduce(stack, [latecomer, people[0]], f"sea glass {run}")
    stack.sink.wait_for(latecomer["email"], within=15)


def test_a_lower_weekly_cap_holds(stack: Stack) -> None:
    run = run_id()
    people, link = _first_intro(stack, run)  # their first introduction this week
    assert httpx.post(link, data={"per_week": "1"}).status_code == 303
    stored = _sql(
        stack,
        "SELECT cap_per_week FROM notifier.preferences WHERE source = 'e2e' AND external_id = $1",
        people[0]["external_id"],
    )
    assert stored["cap_per_week"] == 1

    def applied() -> bool:
        row = _sql(
            stack,
            "SELECT c.own_cap_per_week FROM matcher.contacts c JOIN matcher.identities i "
            "ON i.contact_id = c.id WHERE i.source = 'e2e' AND i.external_id = $1",
            people[0]["external_id"],
        )
        return bool(row and row["own_cap_per_week"] == 1)

    eventually(applied)
    other = new_person(run, 2)
    _introduce(stack, [other, people[0]], f"bonsai {run}")
    time.sleep(3)  # under the operator's cap of 2, over theirs of 1: no second introduction
    assert len(stack.sink.to(people[0]["email"])) == 1
    assert stack.sink.to(other["email"]) == []


def test_opting_back_in_after_unsubscribing_works_and_is_recorded(stack: Stack) -> None:
    run = run_id()
    people, link = _first_intro(stack, run)
    mail = stack.sink.to(people[0]["email"])[0]
    unsubscribe = re.search(r"No more introductions, ever:\s+(\S+)", mail.text)
    assert unsubscribe
    assert "Done" in httpx.post(unsubscribe[1]).text
    eventually(lambda: _profile(stack, people[0]["external_id"])["opted_out"])
    page = httpx.get(link)
    assert "You unsubscribed" in page.text and 'name="opt_in"' in page.text
    assert httpx.post(link, data={"opt_in": "yes"}).status_code == 303
    row = _sql(
        stack,
        "SELECT p.opted_in_at, EXISTS (SELECT 1 FROM notifier.opt_outs o WHERE o.source = "
        "p.source AND o.external_id = p.external_id) AS out FROM notifier.preferences p "
        "WHERE p.source = 'e2e' AND p.external_id = $1",
        people[0]["external_id"],
    )
    assert row["opted_in_at"] is not None and not row["out"]
    assert "You chose to receive introductions again on" in httpx.get(link).text
    eventually(lambda: not _profile(stack, people[0]["external_id"])["opted_out"])
    recorded = _sql(
        stack,
        "SELECT c.opted_in_at FROM matcher.contacts c JOIN matcher.identities i "
        "ON i.contact_id = c.id WHERE i.source = 'e2e' AND i.external_id = $1",
        people[0]["external_id"],
    )
    assert recorded["opted_in_at"] is not None
    other = new_person(run, 2)
    _introduce(stack, [other, people[0]], f"lino cuts {run}")
    stack.sink.wait_for(other["email"], within=15)


def test_the_page_refuses_forged_expired_and_foreign_tokens(stack: Stack) -> None:
    run = run_id()
    people, link = _first_intro(stack, run)
    base, token = link.rsplit("/", 1)
    keyring = LinkKeyring([(k, s.encode()) for k, s in stack.infra.settings().link_keyring])
    who = ("e2e", people[0]["external_id"])
    expired = keyring.sign(LinkClaim(LinkAction.PREFERENCES, *who, int(time.time()) - 60))
    unsubscribe = keyring.sign(LinkClaim(LinkAction.UNSUBSCRIBE, *who, int(time.time()) + 3600))
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert httpx.get(f"{base}/{expired}").status_code == 410
    assert "has expired" in httpx.get(f"{base}/{expired}").text
    for bad in (forged, unsubscribe, "nonsense", "0.abc"):
        assert httpx.get(f"{base}/{bad}").status_code == 400
        assert httpx.post(f"{base}/{bad}", data={"pause": "4"}).status_code == 400
    assert httpx.post(f"{base}/{expired}", data={"pause": "4"}).status_code == 410
    # A preferences token answers nothing on the answer links.
    assert httpx.post(link.replace("/preferences/", "/links/")).status_code == 400
    assert (
        _sql(
            stack,
            "SELECT 1 AS x FROM notifier.preferences WHERE source = 'e2e' AND external_id = $1",
            people[0]["external_id"],
        )
        is None
    )
    # A GET never changes anything, whatever its query.
    assert httpx.get(link, params={"pause": "4"}).status_code == 200
    assert _profile(stack, people[0]["external_id"])["snoozed_until"] is None


def _matcher_column(stack: Stack, column: str, external_id: str) -> Any:
    row = _sql(
        stack,
        f"SELECT c.{column} AS value FROM matcher.contacts c JOIN matcher.identities i "  # noqa: S608 (a column name of this test's own)
        "ON i.contact_id = c.id WHERE i.source = 'e2e' AND i.external_id = $1",
        external_id,
    )
    return row["value"] if row else None


def _topics(stack: Stack, external_id: str) -> set[tuple[str, str]]:
    return {(i["topic"], i["kind"]) for i in _profile(stack, external_id)["interests"]}


def _declare(stack: Stack, external_id: str, topic: str, kind: str = "likes") -> None:
    with stack.client() as client:
        body = {"source": "e2e", "external_id": external_id, "topic": topic, "kind": kind}
        assert client.post("/v1/interests", json=body).status_code == 202


def test_channel_order_changes_the_channel_of_the_next_message(
    stack: Stack, providers: ProviderServer
) -> None:
    run = run_id()
    path = f"/hook/prefs-{run}"
    # Email first (ingest lists it first), a webhook second: the first introduction is mailed.
    person = new_person(run, 0, channels=[{"type": "webhook", "address": providers.url + path}])
    people = [person, new_person(run, 1)]
    _introduce(stack, people, f"paper kites {run}")
    link = _preferences_link(stack.sink.wait_for(person["email"], within=15)[0].text)
    assert providers.state.at(path) == []
    page = httpx.get(link)
    # The page shows what roac knows for them, in the order used now.
    assert '<select id="channel_1" name="channel_1"' in page.text
    assert "Email: " + person["email"] in page.text and "Webhook: " + providers.url in page.text
    saved = httpx.post(link, data={"channel_1": "webhook", "channel_2": "email"})
    assert saved.status_code == 303
    stored = _sql(
        stack,
        "SELECT channel_order FROM notifier.preferences WHERE source = 'e2e' AND external_id = $1",
        person["external_id"],
    )
    assert stored["channel_order"] == ["webhook", "email"]
    eventually(
        lambda: (
            _matcher_column(stack, "channel_order", person["external_id"]) == ["webhook", "email"]
        )
    )
    # The next introduction goes by their first choice: the webhook, not email.
    other = new_person(run, 2)
    _introduce(stack, [other, person], f"sea glass {run}")
    stack.sink.wait_for(other["email"], within=15)
    eventually(lambda: len(providers.state.at(path)) == 1, within=15)
    time.sleep(1)
    assert len(stack.sink.to(person["email"])) == 1
    # The page shows their order back.
    shown = httpx.get(link).text
    assert re.search(r'name="channel_1"[^>]*>\s*<option value="webhook" selected', shown)


def test_an_interest_added_on_the_page_leads_to_an_introduction(stack: Stack) -> None:
    run = run_id()
    people, link = _first_intro(stack, run)
    page = httpx.get(link).text
    assert "Your interests" in page and f"paper kites {run}" in page
    # Someone who offers what they will seek.
    expert = new_person(run, 2)
    _introduce(stack, [expert], f"letterpress {run}")
    with stack.client() as client:
        body = {
            "source": "e2e",
            "external_id": expert["external_id"],
            "topic": f"bookbinding {run}",
            "kind": "offers",
        }
        assert client.post("/v1/interests", json=body).status_code == 202
    eventually(lambda: (f"bookbinding {run}", "offers") in _topics(stack, expert["external_id"]))
    added = httpx.post(
        link, data={"interest_action": "add", "topic": f"Bookbinding {run}", "kind": "seeks"}
    )
    assert added.status_code == 303
    # Shown at once, applied by the matcher as the person's own interest event.
    assert f"bookbinding {run}" in httpx.get(link).text
    eventually(lambda: (f"bookbinding {run}", "seeks") in _topics(stack, people[0]["external_id"]))
    mail = stack.sink.wait_for(expert["email"], within=15)[0]
    assert people[0]["name"] in mail.text
    assert len(stack.sink.wait_for(people[0]["email"], count=2, within=15)) == 2
    # An interest of the wrong kind of text is refused, and nothing is published.
    refused = httpx.post(
        link, data={"interest_action": "add", "topic": "x\u202ey", "kind": "likes"}
    )
    assert refused.status_code == 422 and "A topic is 1 to 200 characters" in refused.text


def test_an_interest_removed_on_the_page_no_longer_matches(stack: Stack) -> None:
    run = run_id()
    people, link = _first_intro(stack, run)
    topic = f"moss gardens {run}"
    _declare(stack, people[0]["external_id"], topic)
    eventually(lambda: (topic, "likes") in _topics(stack, people[0]["external_id"]))
    assert topic in httpx.get(link).text
    removed = httpx.post(link, data={"interest_action": "remove", "topic": topic, "kind": "likes"})
    assert removed.status_code == 303
    assert topic not in httpx.get(link).text
    eventually(lambda: (topic, "likes") not in _topics(stack, people[0]["external_id"]))
    # A newcomer on that topic alone meets nobody: they had no one else on it.
    newcomer = new_person(run, 2)
    _introduce(stack, [newcomer], topic)
    time.sleep(3)
    assert stack.sink.to(newcomer["email"]) == []
    assert len(stack.sink.to(people[0]["email"])) == 1
    # Another kind for one they hold: withdrawn as `likes`, declared as `offers`.
    kites = f"paper kites {run}"
    changed = httpx.post(
        link,
        data={"interest_action": "change", "topic": kites, "kind": "likes", "new_kind": "offers"},
    )
    assert changed.status_code == 303
    eventually(lambda: _topics(stack, people[0]["external_id"]) == {(kites, "offers")})


def _finished_round(matcher: httpx.Client, location: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = matcher.get(location).json()
        if body["status"] in ("done", "failed"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.3)


def test_a_monthly_cap_holds_in_a_round(stack: Stack) -> None:
    run = run_id()
    people, link = _first_intro(stack, run)  # their first introduction this month
    assert httpx.post(link, data={"per_month": "1"}).status_code == 303
    eventually(lambda: _matcher_column(stack, "own_cap_per_month", people[0]["external_id"]) == 1)
    tag = f"t{run}"
    others = [new_person(run, i, tags=[tag]) for i in range(2, 6)]
    tagged = [{**people[0], "tags": [tag]}, *others]
    # A bulk load: applied, introducing nobody at once; the round does. All share one topic.
    with stack.client(headers={"X-Roac-Bulk": "true"}) as client:
        assert client.post("/v1/contacts", json={"items": tagged}).status_code == 202
        interests = [
            {"source": "e2e", "external_id": p["external_id"], "topic": f"pottery {run}"}
            for p in tagged
        ]
        assert client.post("/v1/interests", json={"items": interests}).status_code == 202
    for person in tagged:
        eventually(lambda p=person: (f"pottery {run}", "likes") in _topics(stack, p["external_id"]))
    assert tag in _profile(stack, people[0]["external_id"])["tags"]
    with httpx.Client(
        base_url=stack.matcher_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as matcher:
        pool = f"p{run}"
        created = matcher.post("/v1/pools", json={"name": pool, "selector": {"tags": [tag]}})
        assert created.status_code == 201, created.text
        requested = matcher.post("/v1/rounds", json={"pool": pool, "seed": 3})
        assert requested.status_code == 202, requested.text
        done = _finished_round(matcher, requested.headers["Location"])
        assert done["status"] == "done", done
        intros = matcher.get(f"/v1/rounds/{done['id']}/intros").json()["intros"]
    placed = {p["external_id"] for i in intros for p in i["participants"]}
    # Under the operator's weekly cap of 2, at their own monthly cap of 1: not introduced.
    assert people[0]["external_id"] not in placed
    assert {p["external_id"] for p in others} <= placed
    time.sleep(2)
    assert len(stack.sink.to(people[0]["email"])) == 1
