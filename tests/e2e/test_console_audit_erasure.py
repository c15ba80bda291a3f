"""A person erased through the API is forgotten by the console's audit list within one sweep,
against the live services: audit rows recorded as the console's pages record them (a blocked
pairing between A and B, a pause of B, a pause of a person merged into another, and a row from
before the audit kept its people list), B erased through ingest's DELETE; a sweep with the
matcher down changes nothing; one sweep with the live matcher (asked with a key scoped as the
console's, through the console's own API clients) leaves no row naming B in its target, detail
or people, while A and the merged person are still named."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest

from services.console.accounts import Accounts
from services.console.audit_people import ERASED
from services.console.clients import Apis
from services.console.erasure_sweep import AuditErasureSweep, SweepCounts, asking_the_matcher
from tests.e2e.conftest import Stack, new_person, run_id
from tests.e2e.test_erasure import wait_until
from tests.support.infra import API_KEY, free_port
from tests.support.processes import run_roac

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def console_key(stack: Stack) -> str:
    """A key with the scope the sweep uses (contacts:read, every source), as the console's."""
    name = f"console-sweep-{run_id()}"
    created = run_roac(
        stack.env, "keys", "create", name, "--scope", "contacts:read", "--source", "*"
    )
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def _known_to_matcher(stack: Stack, source: str, external_id: str) -> int:
    response = httpx.get(
        f"{stack.matcher_url}/v1/contacts/{source}/{external_id}/identity",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    return response.status_code


async def _with_accounts(stack: Stack, work: Any) -> Any:
    pool = await asyncpg.create_pool(stack.infra.database_url, min_size=1, max_size=2)
    try:
        return await work(Accounts(pool, timedelta(hours=1)))
    finally:
        await pool.close()


def _sweep(stack: Stack, key: str, matcher_url: str) -> SweepCounts:
    async def work(accounts: Accounts) -> SweepCounts:
        urls = {"ingest": stack.ingest_url, "matcher": matcher_url, "notifier": stack.notifier_url}
        apis = Apis(urls, key)
        try:
            sweep = AuditErasureSweep(
                accounts, asking_the_matcher(apis), interval=600, questions_per_second=200
            )
            return await sweep.sweep_once()
        finally:
            await apis.close()

    counts: SweepCounts = asyncio.run(_with_accounts(stack, work))
    return counts


def _rows(stack: Stack, ids: list[int]) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(stack.infra.database_url)
        try:
            rows = await conn.fetch(
                "SELECT id, target, detail, people FROM console.audit WHERE id = ANY($1) "
                "ORDER BY id",
                ids,
            )
        finally:
            await conn.close()
        return [dict(r) for r in rows]

    return asyncio.run(read())


def _mentioning(stack: Stack, external_id: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(stack.infra.database_url)
        try:
            rows = await conn.fetch(
                "SELECT id, target, detail, people FROM console.audit "
                "WHERE strpos(target || detail || array_to_string(people, ' '), $1) > 0",
                external_id,
            )
        finally:
            await conn.close()
        return [dict(r) for r in rows]

    return asyncio.run(read())


def _record(stack: Stack, rows: list[tuple[str, str, str, list[str]]]) -> list[int]:
    """Audit rows as the People pages record them (Accounts.record); a row with no people is
    written as one from before the list was kept."""

    async def work(accounts: Accounts) -> list[int]:
        ids = []
        for action, target, detail, people in rows:
            await accounts.record("ops@example.org", action, target, "ok", detail, people)
            newest = await accounts.audit(1, None)
            ids.append(newest[0]["id"])
        return ids

    recorded: list[int] = asyncio.run(_with_accounts(stack, work))
    return recorded


def test_a_person_erased_through_the_api_is_named_in_no_audit_row_one_sweep_later(
    stack: Stack, console_key: str
) -> None:
    run = run_id()
    ada, bob = new_person(run, 1), new_person(run, 2)
    # Two identities of one source sharing an email: merged into one person.
    merged_into, merged = new_person(run, 3), new_person(run, 4, email=f"p3.{run}@example.org")
    with stack.client() as client:
        for person in (ada, bob, merged_into, merged):
            response = client.post("/v1/contacts", json=person)
            assert response.status_code == 202, response.text
    for person in (ada, bob, merged_into, merged):
        assert wait_until(lambda p=person: _known_to_matcher(stack, "e2e", p["external_id"]) == 200)
    a, b, m = (f"e2e/{p['external_id']}" for p in (ada, bob, merged))
    corr = f"console-block-{uuid4()}"
    ids = _record(
        stack,
        [
            ("block pairing", f"person {a}", f"never with person {b}; {corr}", [a, b]),
            ("pause", f"person {b}", "paused until 2027-01-04; console-pause-1", [b]),
            ("pause", f"person {m}", "paused until 2027-01-04; console-pause-2", [m]),
            # Recorded before the list of people was kept: found by its text.
            ("block pairing", f"person {a}", f"never with person {b}; {corr}", []),
        ],
    )
    before = _rows(stack, ids)

    with stack.client() as client:
        erased = client.delete(f"/v1/contacts/e2e/{bob['external_id']}")
        assert erased.status_code == 202, erased.text
    assert wait_until(lambda: _known_to_matcher(stack, "e2e", bob["external_id"]) == 404)
    merged_view = httpx.get(
        f"{stack.matcher_url}/v1/contacts/{m}/identity",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    ).json()
    assert {i["external_id"] for i in merged_view["identities"]} == {
        merged_into["external_id"],
        merged["external_id"],
    }, "not merged"

    # The matcher down (nothing listens there): nobody is forgotten, the sweep gives up.
    down = _sweep(stack, console_key, f"http://127.0.0.1:{free_port()}")
    assert down.forgotten == 0 and down.unanswered == down.asked > 0
    assert _rows(stack, ids) == before

    counts = _sweep(stack, console_key, stack.matcher_url)
    assert counts.forgotten == 1 and counts.unanswered == 0
    assert _mentioning(stack, bob["external_id"]) == []
    after = _rows(stack, ids)
    assert [(r["target"], r["detail"], r["people"]) for r in after] == [
        (f"person {a}", f"never with {ERASED}; {corr}", [a, ERASED]),
        (ERASED, "paused until 2027-01-04; console-pause-1", [ERASED]),
        (f"person {m}", "paused until 2027-01-04; console-pause-2", [m]),
        (f"person {a}", f"never with {ERASED}; {corr}", []),
    ]
    # A second sweep has nothing more to forget.
    assert _sweep(stack, console_key, stack.matcher_url).forgotten == 0
