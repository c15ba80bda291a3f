"""A person's preferences page in a real browser (Debian's Chromium through Playwright) against
the live stack: reached from the footer of their ask, axe-core finds no serious or critical
violation, the keyboard reaches every control in order, a two-week pause is saved and shown;
a screenshot goes to docs/preferences.png."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import DOCS, ConsoleStack
from tests.browser.test_console import accessible
from tests.e2e.conftest import new_person, run_id


def _preferences_link(console: ConsoleStack) -> str:
    run = run_id()
    people = [new_person(run, i) for i in range(2)]
    with console.stack.client() as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        for person in people:
            body = {"source": "e2e", "external_id": person["external_id"], "topic": f"quilts {run}"}
            assert client.post("/v1/interests", json=body).status_code == 202
    ask = console.stack.sink.wait_for(people[0]["email"], within=20)[0]
    found = re.search(r"Your preferences:\s+(\S+)", ask.text)
    assert found, ask.text
    return found[1]


def test_the_preferences_page_is_accessible_and_a_pause_is_saved(
    page: Page, console_stack: ConsoleStack
) -> None:
    link = _preferences_link(console_stack)
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Your preferences")
    accessible(page)
    # Focus order follows the form: the first pause choice, then on to the save button.
    page.get_by_label("No change").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Pause until (YYYY-MM-DD)")).to_be_focused()
    page.get_by_label("For 2 weeks").check()
    page.get_by_label("At most this many introductions a week").select_option("1")
    page.get_by_role("button", name="Save my preferences").click()
    expect(page.get_by_role("status")).to_contain_text("Saved")
    expect(page.locator("#standing")).to_contain_text("Introductions are paused until")
    accessible(page)
    page.screenshot(path=str(DOCS / "preferences.png"), full_page=True)
    # A forged link shows a refusal, accessible too.
    page.goto(link[:-3] + "xyz")
    expect(page.get_by_role("heading", level=1)).to_have_text("This link does not work")
    accessible(page)
    assert httpx.get(link[:-3] + "xyz").status_code == 400
