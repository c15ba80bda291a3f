"""The check-in page ("did you meet?") in a real browser (Debian's Chromium through Playwright)
against live services: two people are introduced, a real check-in email arrives, its *We met*
link is opened and answered, a 4 is rated on the page that follows, and the matcher receives
the meeting with its rating. axe-core finds no serious or critical violation on the pages; a
screenshot of the rating page goes to docs/checkin-page.png.

The check-in comes seconds after the introduction here, so these tests run their own stack
(ROAC_CHECKIN_AFTER_SECONDS=2) rather than the console's, whose people would otherwise all get
check-ins. It starts in a thread: the sync Playwright API keeps an event loop running in this
one, where the stack's asyncio.run would be refused."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import DOCS
from tests.browser.test_console import accessible, eventually
from tests.e2e.conftest import Stack, new_person, run_id, running_stack

T = TypeVar("T")


def _in_thread(work: Callable[[], T]) -> T:
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(work).result()


@pytest.fixture(scope="module")
def checkin_stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    running = running_stack(
        "checkin-page",
        tmp_path_factory.mktemp("checkin-page-logs"),
        request,
        ROAC_INTRO_MODE="double_opt_in",
        ROAC_MATCH_MIN_SCORE="0.1",  # any shared topic will do
        ROAC_QUIET_HOURS_ENABLED="false",
        ROAC_CHECKIN_AFTER_SECONDS="2",
        ROAC_EXPIRY_SWEEP_SECONDS="0.5",
    )
    stack = _in_thread(running.__enter__)
    try:
        yield stack
    finally:
        _in_thread(lambda: running.__exit__(None, None, None))


def _link(text: str, label: str) -> str:
    found = re.search(rf"{label}:\s+(\S+)", text)
    assert found, text
    return found[1]


def _feedback(stack: Stack, external_id: str) -> list[tuple[str, int | None]]:
    """The matcher's feedback on this person's introductions (through RabbitMQ:
    intro.feedback_given.v1); only they answer here."""

    async def run() -> list[tuple[str, int | None]]:
        conn = await asyncpg.connect(stack.infra.database_url)
        try:
            rows = await conn.fetch(
                "SELECT f.outcome, f.rating FROM matcher.feedback f "
                "JOIN matcher.proposal_participants pp ON pp.proposal_id = f.proposal_id "
                "JOIN matcher.identities i ON i.contact_id = pp.contact_id "
                "WHERE i.source = 'e2e' AND i.external_id = $1",
                external_id,
            )
        finally:
            await conn.close()
        return [(r["outcome"], r["rating"]) for r in rows]

    return _in_thread(lambda: asyncio.run(run()))


def _checkin_mail(stack: Stack) -> tuple[dict[str, Any], Any]:
    """Two people introduced (both said yes to their ask); the first one's check-in."""
    run = run_id()
    people = [new_person(run, i) for i in range(2)]
    with stack.client() as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        for person in people:
            body = {"source": "e2e", "external_id": person["external_id"], "topic": f"moss {run}"}
            assert client.post("/v1/interests", json=body).status_code == 202
    for person in people:
        ask = stack.sink.wait_for(person["email"], within=20)[0]
        assert "Thank you" in httpx.post(_link(ask.text, "Yes, introduce me")).text
    # The ask, the introduction, then "did you meet?" (newest first).
    mail = stack.sink.wait_for(people[0]["email"], count=3, within=30)[0]
    assert "Did you meet" in mail.subject
    return people[0], mail


def test_we_met_and_a_rating_on_the_check_in_page_reach_the_matcher(
    page: Page, checkin_stack: Stack
) -> None:
    person, mail = _checkin_mail(checkin_stack)
    page.goto(_link(mail.text, "We met"))
    # A GET only asks (mail scanners open links): the button answers.
    expect(page.get_by_role("heading", level=1)).to_have_text("You met?")
    accessible(page)
    page.get_by_role("button", name="Yes, we met").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you!")
    expect(page.get_by_text("Glad you met.")).to_be_visible()
    # The page that follows: an optional 1 to 5 rating, reachable by keyboard, labelled.
    rating = page.get_by_role("group", name="How was it? (optional)")
    expect(rating.get_by_role("radio")).to_have_count(5)
    rating.get_by_label("4").focus()
    page.keyboard.press("Space")
    expect(rating.get_by_label("4")).to_be_checked()
    accessible(page)
    page.screenshot(path=str(DOCS / "checkin-page.png"), full_page=True)
    page.get_by_role("button", name="Send rating").click()
    expect(page.get_by_text("Noted, with your rating.")).to_be_visible()
    accessible(page)

    # The matcher got the meeting, then its rating (the same respondent's row, replaced).
    eventually(lambda: _feedback(checkin_stack, person["external_id"]) == [("met", 4)])
    # Clicked again later: already noted, and the rating stays.
    page.goto(_link(mail.text, "We met"))
    page.get_by_role("button", name="Yes, we met").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Already noted")
    time.sleep(1)
    assert _feedback(checkin_stack, person["external_id"]) == [("met", 4)]
