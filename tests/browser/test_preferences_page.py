"""A person's preferences page in a real browser (Debian's Chromium through Playwright) against
the live stack: reached from the footer of their ask; axe-core finds no serious or critical
violation; every control has a label and the keyboard reaches them in the order they are read;
and the whole page works with JavaScript switched off: a pause, weekly and monthly caps, the
order of their channels, and their interests added, given another kind and removed. A screenshot
goes to docs/preferences.png."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import DOCS, ConsoleStack
from tests.browser.test_console import accessible, eventually
from tests.e2e.conftest import new_person, run_id
from tests.support.infra import API_KEY


def _preferences_link(console: ConsoleStack, run: str) -> str:
    """Two people asked to meet; the first has an email address and a webhook. Their link."""
    hook = {"type": "webhook", "address": f"{console.providers.url}/hook/prefs-{run}"}
    people = [new_person(run, 0, channels=[hook]), new_person(run, 1)]
    with console.stack.client() as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        for person in people:
            body = {"source": "e2e", "external_id": person["external_id"], "topic": f"quilts {run}"}
            assert client.post("/v1/interests", json=body).status_code == 202
    ask = console.stack.sink.wait_for(people[0]["email"], within=20)[0]
    found = re.search(r"Your preferences:\s+(\S+)", ask.text)
    assert found, ask.text
    return found[1]


def _held_topics(console: ConsoleStack, run: str) -> set[tuple[str, str]]:
    response = httpx.get(
        f"{console.stack.matcher_url}/v1/contacts/e2e/{run}-0",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 200, response.text
    return {(i["topic"], i["kind"]) for i in response.json()["interests"]}


def test_the_preferences_page_is_accessible_and_works_without_javascript(
    page: Page, browser: Browser, console_stack: ConsoleStack
) -> None:
    run = run_id()
    link = _preferences_link(console_stack, run)
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Your preferences")
    expect(page.get_by_role("heading", level=2)).to_have_text("Your interests")
    accessible(page)
    # Every control is named by its label, and the keyboard follows the page's reading order.
    order = [
        page.get_by_label("No change"),
        page.get_by_label("Pause until (YYYY-MM-DD)"),
    ]
    order[0].focus()
    page.keyboard.press("Tab")
    expect(order[1]).to_be_focused()
    page.get_by_label("At most this many introductions a week").focus()
    for control in [
        page.get_by_label("At most this many introductions a month (30 days)"),
        page.get_by_label("Choice 1"),
        page.get_by_label("Choice 2"),
        page.get_by_label("The language of our messages"),
        page.get_by_role("button", name="Save my preferences"),
        page.get_by_label(f"quilts {run}"),
        page.get_by_role("button", name=f"Change quilts {run}"),
        page.get_by_role("button", name=f"Remove quilts {run}"),
        page.get_by_label("Topic"),
        page.get_by_label("How"),
        page.get_by_role("button", name="Add"),
    ]:
        page.keyboard.press("Tab")
        expect(control).to_be_focused()

    # The same page with JavaScript switched off: plain forms, each answered by the server.
    context = browser.new_context(java_script_enabled=False)
    try:
        plain = context.new_page()
        plain.goto(link)
        expect(plain.get_by_label("Choice 1")).to_have_value("email")
        plain.get_by_label("For 2 weeks").check()
        plain.get_by_label("At most this many introductions a week").select_option("1")
        plain.get_by_label("At most this many introductions a month (30 days)").select_option("3")
        plain.get_by_label("Choice 1").select_option("webhook")
        plain.get_by_label("Choice 2").select_option("email")
        plain.get_by_role("button", name="Save my preferences").click()
        expect(plain.get_by_role("status")).to_contain_text("Saved")
        expect(plain.locator("#standing")).to_contain_text("Introductions are paused until")
        expect(plain.get_by_label("Choice 1")).to_have_value("webhook")
        expect(
            plain.get_by_label("At most this many introductions a month (30 days)")
        ).to_have_value("3")

        plain.get_by_label("Topic").fill(f"Bookbinding {run}")
        plain.get_by_label("How").select_option("seeks")
        plain.get_by_role("button", name="Add").click()
        expect(plain.get_by_label(f"bookbinding {run}")).to_be_visible()
        eventually(lambda: (f"bookbinding {run}", "seeks") in _held_topics(console_stack, run))

        plain.get_by_label(f"quilts {run}").select_option("offers")
        plain.get_by_role("button", name=f"Change quilts {run}").click()
        expect(plain.get_by_label(f"quilts {run}")).to_have_value("offers")
        eventually(lambda: (f"quilts {run}", "offers") in _held_topics(console_stack, run))

        plain.get_by_role("button", name=f"Remove bookbinding {run}").click()
        expect(plain.get_by_label(f"bookbinding {run}")).to_have_count(0)
        eventually(lambda: (f"bookbinding {run}", "seeks") not in _held_topics(console_stack, run))
        assert _held_topics(console_stack, run) == {(f"quilts {run}", "offers")}
    finally:
        context.close()

    # Back in the ordinary browser: what was saved is shown, still accessible.
    page.goto(link)
    expect(page.locator("#standing")).to_contain_text("Introductions are paused until")
    page.get_by_label("Topic").fill(f"Tide pools {run}")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("status")).to_contain_text("Saved")
    accessible(page)
    page.screenshot(path=str(DOCS / "preferences.png"), full_page=True)
    # A forged link shows a refusal, accessible too.
    page.goto(link[:-3] + "xyz")
    expect(page.get_by_role("heading", level=1)).to_have_text("This link does not work")
    accessible(page)
    assert httpx.get(link[:-3] + "xyz").status_code == 400
