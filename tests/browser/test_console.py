"""The community manager's console in a real browser, against the live stack: sign in, create a
pool, dry-run a round and read a group's explanation, run it, the asks arrive at the SMTP sink,
accept through the emailed links, the console shows the introduction as introduced and counts it
on Today; search a person, pause one, erase one after confirming. Refusals: a wrong password,
a forged or missing CSRF token, an expired session, too many failed sign-ins. axe-core on every
page: no serious or critical violation. Screenshots of Today, a dry run and a person's page are
written to docs/."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from services.console.cookies import SESSION_COOKIE, CookieSigner
from tests.browser.conftest import DOCS, ConsoleStack, _roac, csrf_of, sign_in
from tests.e2e.conftest import new_person, run_id
from tests.support.infra import CONSOLE_SESSION_KEY

_axe = Axe()


def accessible(page: Page) -> None:
    """axe-core on the page as it is: no serious or critical violation."""
    violations = _axe.run(page).response["violations"]
    bad = [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}"
        for v in violations
        if v.get("impact") in ("serious", "critical")
    ]
    assert not bad, f"{page.url}: {bad}"


def eventually(check: Callable[[], bool], within: float = 20.0, every: float = 0.5) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(every)


def _sql(console: ConsoleStack, statement: str, *args: Any) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(console.stack.infra.database_url)
        try:
            return await conn.fetchval(statement, *args)
        finally:
            await conn.close()

    # In a thread: the sync Playwright API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, run()).result()


def _link(text: str, label: str) -> str:
    found = re.search(rf"{label}:\s+(\S+)", text)
    assert found, text
    return found[1]


def test_wrong_password_forged_or_missing_csrf_and_expired_session_are_refused(
    page: Page, console_stack: ConsoleStack
) -> None:
    sign_in(page, password="not the password at all")
    expect(page.get_by_role("alert")).to_contain_text("Wrong email or password")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    accessible(page)

    # The sign-in form itself: without its token, or with one of another browser, refused.
    base = console_stack.url
    no_token = page.request.post(
        f"{base}/sign-in", form={"email": "ops@example.org", "password": "x"}, max_redirects=0
    )
    assert no_token.status == 403
    forged = page.request.post(
        f"{base}/sign-in",
        form={"email": "ops@example.org", "password": "x", "csrf_token": "forged"},
        max_redirects=0,
    )
    assert forged.status == 403

    sign_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Today")
    pool: dict[str, str | float | bool] = {"name": f"csrf-{run_id()}", "do": "save"}
    missing = page.request.post(f"{base}/pools", form=pool, max_redirects=0)
    assert missing.status == 403 and "CSRF" in missing.text()
    wrong = page.request.post(
        f"{base}/pools", form={**pool, "csrf_token": "forged"}, max_redirects=0
    )
    assert wrong.status == 403
    page.goto("/pools")
    right = page.request.post(
        f"{base}/pools", form={**pool, "csrf_token": csrf_of(page)}, max_redirects=0
    )
    assert right.status == 303  # the same form with the session's token is accepted

    # A session cookie whose signed expiry has passed is refused ...
    session_id = _sql(
        console_stack, "SELECT id FROM console.sessions ORDER BY created_at DESC LIMIT 1"
    )
    stale = CookieSigner(CONSOLE_SESSION_KEY.encode()).sign(
        "session", str(session_id), int(time.time()) - 1
    )
    other = page.context.browser
    assert other is not None
    context = other.new_context(base_url=base)
    context.add_cookies([{"name": SESSION_COOKIE, "value": stale, "url": base}])
    stale_page = context.new_page()
    stale_page.goto("/")
    expect(stale_page.get_by_role("heading", level=1)).to_have_text("Sign in")
    context.close()
    # ... and so is one whose session expired on the server.
    _sql(
        console_stack,
        "UPDATE console.sessions SET expires_at = now() - interval '1 second' WHERE id = $1",
        session_id,
    )
    page.goto("/pools")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert "next=%2Fpools" in page.url


def test_failed_sign_ins_are_rate_limited(page: Page, console_stack: ConsoleStack) -> None:
    email = f"limited-{run_id()}@example.org"
    _roac(console_stack.env, "operators", "create", email, "--password", "the right passphrase")
    for _ in range(5):
        sign_in(page, email, "a wrong passphrase")
        expect(page.get_by_role("alert")).to_contain_text("Wrong email or password")
    sign_in(page, email, "the right passphrase")
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")


def test_a_community_managers_morning(operator_page: Page, console_stack: ConsoleStack) -> None:
    page = operator_page
    stack = console_stack.stack
    run = run_id()
    tag = f"mondays-{run}"
    people = [new_person(run, i, tags=[tag]) for i in range(4)]
    topics = [f"kite aerial photography {run}", f"beekeeping {run}"]
    # A bulk import introduces nobody at once: the round does.
    with stack.client(headers={"X-Roac-Bulk": "true"}) as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        interests = [
            {"source": "e2e", "external_id": p["external_id"], "topic": topics[i // 2]}
            for i, p in enumerate(people)
        ]
        assert client.post("/v1/interests", json={"items": interests}).status_code == 202
    accessible(page)

    # Pools: a new pool, its selector previewed, saved with a weekly schedule.
    page.get_by_role("link", name="Pools", exact=True).click()
    accessible(page)
    page.get_by_role("link", name="New pool").click()
    pool = f"mondays-0900-{run}"
    page.get_by_label("Name").fill(pool)
    page.get_by_label("Tags").fill(tag)
    # "Mondays 09:00": a calendar schedule, its first round at the first Monday 09:00 to come.
    page.get_by_label("Monday", exact=True).check()
    page.get_by_label("At (local time)").fill("09:00")
    page.get_by_label("Time zone", exact=True).fill("Europe/Berlin")

    def previewed_four() -> bool:
        page.get_by_role("button", name="Preview how many people").click()
        return "takes in 4 people" in page.locator("#preview").inner_text()

    eventually(previewed_four)
    accessible(page)
    page.get_by_role("button", name="Save pool").click()
    expect(page.get_by_role("status")).to_have_text("The pool is saved.")
    expect(page.get_by_role("row", name=re.compile(pool))).to_contain_text(
        "Mondays at 09:00 (Europe/Berlin)"
    )

    # Rounds: a dry run, its groups explained.
    page.get_by_role("link", name=f"Rounds of {pool}").click()
    accessible(page)
    page.get_by_label("Start a round of").select_option(pool)
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#round-status")).to_have_text("done", timeout=30_000)
    groups = page.locator("section.group")
    expect(groups).to_have_count(2)
    explanation = groups.first.locator(".explanation").inner_text()
    assert explanation.strip(), "a planned group without its explanation"
    assert "kite aerial photography" in page.content() and "beekeeping" in page.content()
    accessible(page)
    page.screenshot(path=str(DOCS / "console-dry-run.png"), full_page=True)

    # Run it for real: the asks arrive at the SMTP sink.
    page.get_by_role("button", name="Run this pool's round now").click()
    expect(page.locator("#round-status")).to_have_text("done", timeout=30_000)
    round_url = page.url
    asks = [stack.sink.wait_for(p["email"], within=30) for p in people]
    assert all(len(a) == 1 for a in asks), [len(a) for a in asks]

    def shows_state(state: str, count: int) -> Callable[[], bool]:
        def check() -> bool:
            page.goto(round_url)
            return page.locator("td.state", has_text=state).count() == count

        return check

    eventually(shows_state("asked", 2))
    accessible(page)

    # The first pair accepts through the emailed links.
    for ask in asks[:2]:
        link = _link(ask[0].text, "Yes, introduce me")
        assert "form" in httpx.get(link).text
        assert "Thank you" in httpx.post(link).text
    intros = [stack.sink.wait_for(p["email"], count=2, within=30) for p in people[:2]]
    assert all(len(m) == 2 for m in intros)
    eventually(shows_state("introduced", 1))

    # Today counts it.
    page.get_by_role("link", name="Today").click()
    expect(page.locator('dd[data-state="introduced"]')).to_have_text("1")
    expect(page.locator('dd[data-state="asked"]')).to_have_text("1")
    expect(page.locator('dd[data-state="acceptance"]')).to_have_text("100%")
    accessible(page)
    page.screenshot(path=str(DOCS / "console-today.png"), full_page=True)

    # People: search by topic, open a person's page.
    page.get_by_role("link", name="People").click()
    page.get_by_label("Name, email, id, tag or topic").fill(topics[0])
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody tr")).to_have_count(2)
    accessible(page)
    page.get_by_role("link", name=people[0]["name"]).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(people[0]["name"])
    expect(page.locator("td.state")).to_have_text("introduced")
    expect(page.get_by_text(f"e2e/{people[0]['external_id']}")).to_be_visible()
    accessible(page)
    page.screenshot(path=str(DOCS / "console-person.png"), full_page=True)

    # Pause the third person, after a confirmation naming what it does.
    paused, erased = people[2], people[3]
    page.goto("/people?q=" + paused["email"])
    page.get_by_role("link", name=paused["name"]).click()
    page.get_by_role("link", name="Pause for 30 days").click()
    expect(page.locator("p.effect")).to_contain_text(
        re.compile(r"Paused until \d{4}-\d{2}-\d{2}, kept whatever the integration sends")
    )
    accessible(page)
    page.get_by_role("button", name=f"Pause {paused['name']}").click()
    expect(page.get_by_role("status")).to_contain_text("Pause requested")

    def shows_paused() -> bool:
        page.reload()
        return "paused until" in page.locator("#person-status").inner_text()

    eventually(shows_paused)
    # The integration's nightly sync upserts them without snoozed_until: still paused (the
    # console set the pause as the person's own choice, which upserts do not undo).
    renamed = {**paused, "name": f"{paused['name']} (synced)"}
    with stack.client() as client:
        assert client.post("/v1/contacts", json=renamed).status_code == 202

    def synced() -> bool:
        page.reload()
        return bool(page.get_by_role("heading", level=1).inner_text() == renamed["name"])

    eventually(synced)
    expect(page.locator("#person-status")).to_contain_text("paused until")
    paused = renamed
    # A new round leaves them out: they sit it out, as paused.
    page.goto(f"/rounds?pool={pool}")
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#round-status")).to_have_text("done", timeout=30_000)
    expect(page.locator("#round-unavailable")).to_have_text("1 (paused: 1)")
    # ... and lists them among those left out, with the day their pause ends.
    expect(page.locator("ul.left-out li").filter(has_text=paused["external_id"])).to_have_text(
        re.compile(
            rf"e2e/{re.escape(paused['external_id'])}: paused until \d{{4}}-\d{{2}}-\d{{2}}$"
        )
    )
    for group in page.locator("section.group").all():
        assert paused["external_id"] not in group.inner_text()
    accessible(page)

    # Erase the fourth, after confirming; nothing of them is left on the console's pages.
    page.goto("/people?q=" + erased["email"])
    page.get_by_role("link", name=erased["name"]).click()
    page.get_by_role("link", name="Erase").click()
    expect(page.get_by_text("This cannot be undone")).to_be_visible()
    accessible(page)
    page.get_by_role("button", name=f"Erase {erased['name']}").click()
    expect(page.get_by_role("status")).to_contain_text("Erasure requested")

    def gone() -> bool:
        page.goto("/people?q=" + erased["email"])
        return page.get_by_text("Nobody found").count() == 1

    eventually(gone)
    for path in ("/", round_url, "/audit", "/deliveries", "/people?q=" + topics[1]):
        page.goto(path)
        text = page.content()
        assert erased["name"] not in text and erased["external_id"] not in text, path
    missing = page.request.get(f"{console_stack.url}/person?source=e2e&id={erased['external_id']}")
    assert missing.status == 404

    # Deliveries and the audit list: every action above, with who did it.
    page.get_by_role("link", name="Deliveries").click()
    accessible(page)
    page.get_by_role("link", name="Audit").click()
    accessible(page)
    audit = page.locator("tbody").inner_text()
    for action in ("save pool", "dry-run round", "run round", "pause", "erase", "sign in"):
        assert action in audit, action
    assert "ops@example.org" in audit


def test_a_parked_delivery_is_retried_after_its_webhook_comes_back(
    operator_page: Page, console_stack: ConsoleStack
) -> None:
    page = operator_page
    providers = console_stack.providers
    run = run_id()
    path = f"/hook/{run}"
    providers.state.script(path, 503, 503)  # both attempts fail: the delivery is parked
    on_webhook = new_person(run, 0)
    on_webhook.pop("email")
    on_webhook["channels"] = [{"type": "webhook", "address": providers.url + path}]
    people = [on_webhook, new_person(run, 1)]
    with console_stack.stack.client() as client:  # not bulk: matched at once
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        for person in people:
            interest = {"source": "e2e", "external_id": person["external_id"]}
            interest["topic"] = f"tidepools {run}"
            assert client.post("/v1/interests", json=interest).status_code == 202

    row = page.get_by_role("row", name=re.compile(on_webhook["external_id"]))

    def parked() -> bool:
        page.goto("/deliveries?status=parked")
        return row.count() == 1

    eventually(parked, within=30)
    expect(row.locator("td.reason")).to_contain_text("503")
    accessible(page)
    row.get_by_role("button", name=re.compile("Retry")).click()
    expect(page.get_by_role("status")).to_have_text("The parked deliveries were queued again.")

    def delivered() -> bool:
        return any(c.body is not None for c in providers.state.at(path))

    eventually(delivered, within=30)
    page.goto("/deliveries?status=parked")
    expect(row).to_have_count(0)
    page.goto("/audit")
    expect(page.locator("tbody")).to_contain_text("retry deliveries")


def test_a_resource_is_previewed_shared_and_its_recipients_seen(
    operator_page: Page, console_stack: ConsoleStack
) -> None:
    page = operator_page
    stack = console_stack.stack
    run = run_id()
    people = [new_person(run, i) for i in range(3)]
    topic = f"gliding {run}"
    with stack.client(headers={"X-Roac-Bulk": "true"}) as client:  # introduces nobody
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        interests = [
            {"source": "e2e", "external_id": p["external_id"], "topic": topic} for p in people
        ]
        assert client.post("/v1/interests", json={"items": interests}).status_code == 202

    page.get_by_role("link", name="Resources").click()
    accessible(page)
    page.get_by_label("Link").fill(f"https://example.org/gliding/{run}")
    page.get_by_label("Title").fill("Thermals for beginners")
    page.get_by_label("Topics").fill(topic)

    def previewed_three() -> bool:
        page.get_by_role("button", name="Preview who it would reach").click()
        return "3 people may receive it" in page.locator("#resource-preview").inner_text()

    eventually(previewed_three)
    expect(page.locator("tbody tr")).to_have_count(3)
    for person in people:
        expect(page.get_by_role("link", name=f"e2e/{person['external_id']}")).to_be_visible()
    accessible(page)

    page.get_by_role("button", name="Share with the best matches now").click()
    expect(page.get_by_role("status")).to_contain_text("The resource is shared")
    expect(page.locator("#resource-recipients")).to_have_text("3")
    for person in people:
        assert stack.sink.wait_for(person["email"], within=30)

    def all_sent() -> bool:
        page.reload()
        return page.locator("td.state", has_text="sent").count() == 3

    eventually(all_sent, within=30)
    accessible(page)
    # A preview now leaves out whoever already received it.
    page.goto("/resources")
    page.get_by_label("Link").fill(f"https://example.org/gliding/{run}")
    page.get_by_label("Topics").fill(topic)
    page.get_by_role("button", name="Preview who it would reach").click()
    expect(page.locator("#resource-preview")).to_contain_text("0 people may receive it")
    page.goto("/audit")
    expect(page.locator("tbody")).to_contain_text("share resource")
