"""The console's corrections to people in a real browser, against the live stack: block a
pairing (a confirmation naming both, the block on the person's page, the audit row, and a dry
run that grouped the two before now leaves them apart) and undo a merge (a confirmation naming
the identities that come apart, the merge shown undone, the audit row); and an operator's
one-time set-password link from the real `roac operators create`: opened, used, signed in
with, and refused the second time. axe-core on every new page: no serious or critical
violation.

These people have no introduction: the morning test's counts on Today stay as they are."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import ConsoleStack, _roac, sign_in
from tests.browser.test_console import accessible, eventually
from tests.e2e.conftest import new_person, run_id
from tests.support.infra import API_KEY


def _load(console: ConsoleStack, people: list[dict[str, Any]], topic: str | None = None) -> None:
    """People (and a topic they share) through ingest, in bulk: nobody is introduced."""
    with console.stack.client(headers={"X-Roac-Bulk": "true"}) as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        if topic:
            interests = [
                {"source": p["source"], "external_id": p["external_id"], "topic": topic}
                for p in people
            ]
            assert client.post("/v1/interests", json={"items": interests}).status_code == 202


def _person_url(person: dict[str, Any]) -> str:
    return f"/person?source={person['source']}&id={person['external_id']}"


def _dry_run_groups(page: Page, pool: str) -> int:
    page.goto(f"/rounds?pool={pool}")
    page.get_by_label("Start a round of").select_option(pool)
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#round-status")).to_have_text("done", timeout=30_000)
    return page.locator("section.group").count()


def test_a_pairing_is_blocked_after_a_confirmation_and_rounds_keep_them_apart(
    operator_page: Page, console_stack: ConsoleStack
) -> None:
    page = operator_page
    run = run_id()
    tag = f"blocked-{run}"
    one, other = (new_person(run, i, tags=[tag]) for i in range(2))
    _load(console_stack, [one, other], topic=f"bonsai {run}")
    pool = f"pair-{run}"
    answer = httpx.post(
        f"{console_stack.stack.matcher_url}/v1/pools",
        json={"name": pool, "selector": {"tags": [tag]}, "group_size": 2},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert answer.status_code in (200, 201), answer.text

    def known() -> bool:
        return page.request.get(console_stack.url + _person_url(other)).status == 200

    eventually(known)
    # Before the block, a dry run puts the two together.
    eventually(lambda: _dry_run_groups(page, pool) == 1, within=30)

    page.goto(_person_url(one))
    page.get_by_label("Never introduce them to (source/id)").fill(f"e2e/{other['external_id']}")
    page.get_by_role("button", name="Block this pairing").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Block the pairing of {one['name']} and {other['name']}?"
    )
    expect(page.locator("p.effect")).to_contain_text("never be introduced to each other again")
    expect(page.locator("p.effect")).to_contain_text(f"e2e/{other['external_id']}")
    accessible(page)
    page.get_by_role("button", name=f"Block {one['name']} and {other['name']}").click()
    expect(page.get_by_role("status")).to_contain_text("The pairing is blocked")
    expect(page.get_by_role("link", name=f"e2e/{other['external_id']}")).to_be_visible()
    accessible(page)

    # The next dry run of their pool leaves them apart: nobody else is in it.
    assert _dry_run_groups(page, pool) == 0
    expect(page.locator("ul.left-out")).to_contain_text(other["external_id"])

    page.goto("/audit")
    row = page.get_by_role("row", name=re.compile("block pairing"))
    expect(row.first).to_contain_text(f"person e2e/{one['external_id']}")
    expect(row.first).to_contain_text(f"never with person e2e/{other['external_id']}")
    expect(row.first).to_contain_text("ops@example.org")


def test_a_merge_is_undone_after_a_confirmation(
    operator_page: Page, console_stack: ConsoleStack
) -> None:
    page = operator_page
    run = run_id()
    first = new_person(run, 0)
    # The same email from the same source: one person, merged.
    second = new_person(run, 1, email=first["email"])
    _load(console_stack, [first])
    _load(console_stack, [second])
    undo = page.get_by_role("link", name="Undo this merge")

    # The merged person's name is their newest identity's: wait for the merge and that name
    # (the two events are applied one after the other, and the page may come in between).
    name = second["name"]

    def merged() -> bool:
        page.goto(_person_url(first))
        return undo.count() == 1 and page.get_by_role("heading", level=1).inner_text() == name

    eventually(merged, within=30)
    expect(page.locator("body")).to_contain_text(f"e2e/{second['external_id']}")
    accessible(page)
    undo.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Undo a merge of {name}?")
    effect = page.locator("p.effect")
    expect(effect).to_contain_text(f"e2e/{second['external_id']} become a person of their own")
    expect(effect).to_contain_text("never merged with")
    accessible(page)
    page.get_by_role("button", name="Undo this merge").click()
    expect(page.get_by_role("status")).to_contain_text("The merge is undone")
    expect(undo).to_have_count(0)  # shown undone, with its date
    identities = page.locator("h2:text('Identities') + ul")
    expect(identities).not_to_contain_text(second["external_id"])
    # The other identity is a person of its own again.
    page.goto(_person_url(second))
    expect(page.get_by_role("heading", level=1)).to_have_text(second["name"])
    accessible(page)

    page.goto("/audit")
    row = page.get_by_role("row", name=re.compile("unmerge"))
    expect(row.first).to_contain_text(f"person e2e/{first['external_id']}")
    expect(row.first).to_contain_text(f"person e2e/{second['external_id']} apart again")


def test_the_one_time_set_password_link_works_once(page: Page, console_stack: ConsoleStack) -> None:
    email = f"new-{run_id()}@example.org"
    password = "a passphrase of my own choosing"
    link = _roac(console_stack.env, "operators", "create", email).stdout.strip()
    assert link.startswith(f"{console_stack.url}/set-password?token="), link

    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Choose your password")
    expect(page.locator("main")).to_contain_text(email)
    accessible(page)
    page.get_by_label("New password").fill(password)
    page.get_by_label("The same again").fill(password)
    page.get_by_role("button", name="Set password").click()
    expect(page.get_by_role("status")).to_have_text("Your password is set: sign in with it.")
    accessible(page)

    sign_in(page, email, password)
    expect(page.get_by_role("heading", level=1)).to_have_text("Today")
    expect(page.locator("form.signout")).to_contain_text(email)

    # The link was used: it sets nothing a second time.
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("This link does not work")
    accessible(page)
    assert page.request.get(link).status == 410
