"""Erasure and opt-out through ingest, end to end: DELETE /v1/contacts/{source}/{external_id}
leaves nothing of the person in any table, and POST .../opt-out stops an introduction already
in flight (a delivery held for the recipient's quiet hours)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import pytest

from shared.erasure import erasure_digest
from tests.e2e.conftest import Stack, new_person, run_id, zone_at
from tests.support.infra import ERASURE_KEY

pytestmark = pytest.mark.e2e

SCHEMAS = ("matcher", "notifier", "messaging", "ingest")
TEXT_TYPES = ("text", "character varying", "character", "jsonb", "json", "bytea", "ARRAY")


def _post(client: httpx.Client, path: str, body: object = None) -> httpx.Response:
    response = client.post(path, json=body) if body is not None else client.post(path)
    assert response.status_code == 202, response.text
    return response


async def _query(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


def query(stack: Stack, sql: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(_query(stack.infra.database_url, sql, *args))


def wait_until(check: Any, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return bool(check())


async def _columns_containing(database_url: str, needles: list[str]) -> list[str]:
    """Every text, varchar, json(b), array and bytea column of the services' schemas that holds
    any of the needles (case-insensitive; bytea as UTF-8 bytes)."""
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch(
            """
            SELECT table_schema, table_name, column_name, data_type
            FROM information_schema.columns
            WHERE table_schema = ANY($1::text[]) AND data_type = ANY($2::text[])
            ORDER BY 1, 2, 3
            """,
            list(SCHEMAS),
            list(TEXT_TYPES),
        )
        assert columns, "no columns found: wrong database?"
        found = []
        for c in columns:
            column = f'"{c["table_schema"]}"."{c["table_name"]}"."{c["column_name"]}"'
            table = f'"{c["table_schema"]}"."{c["table_name"]}"'
            value = f'"{c["column_name"]}"'
            if c["data_type"] == "bytea":
                text = f"lower(encode({value}, 'escape'))"
            else:
                text = f"lower({value}::text)"
            for needle in needles:
                hits = await conn.fetchval(
                    # Identifiers from information_schema, quoted; the needle is a parameter.
                    f"SELECT count(*) FROM {table} WHERE strpos({text}, lower($1)) > 0",  # noqa: S608
                    needle,
                )
                if hits:
                    found.append(f"{column} holds {needle!r} ({hits} rows)")
        return found
    finally:
        await conn.close()


def _others(client: httpx.Client, run: str) -> None:
    """Five unrelated people with a hobby each: a shared topic is rare only among many."""
    _post(client, "/v1/contacts", {"items": [new_person(run, i) for i in range(10, 15)]})
    for i in range(10, 15):
        _post(
            client,
            "/v1/interests",
            {"source": "e2e", "external_id": f"{run}-{i}", "topic": f"hobby {i} {run}"},
        )


def test_erasure_leaves_no_personal_data_in_any_table(stack: Stack) -> None:
    run = run_id()
    people = [new_person(run, i, organization=f"Erasable Org {i} {run}") for i in range(3)]
    rare = f"erasure-tested topic {run}"
    with stack.client() as client:
        _others(client, run)
        _post(client, "/v1/contacts", {"items": people})
        for i in (0, 1):
            _post(
                client,
                "/v1/interests",
                {"source": "e2e", "external_id": f"{run}-{i}", "topic": rare, "kind": "likes"},
            )
        _post(
            client,
            "/v1/interests",
            {"source": "e2e", "external_id": f"{run}-0", "topic": f"solo {run}", "kind": "seeks"},
        )
        assert stack.sink.wait_for(people[0]["email"], within=10), "no introduction to erase"
        assert stack.sink.wait_for(people[1]["email"], within=10)

        erased = people[0]
        response = client.delete(f"/v1/contacts/e2e/{erased['external_id']}")
        assert response.status_code == 202, response.text
        assert len(response.json()["event_ids"]) == 1

    digest = erasure_digest("e2e", erased["external_id"], ERASURE_KEY.encode())
    assert wait_until(
        lambda: (
            query(stack, "SELECT 1 FROM matcher.erasures WHERE digest = $1", digest)
            and query(stack, "SELECT 1 FROM notifier.erasures WHERE digest = $1", digest)
        )
    ), "the erasure was not applied by both services"

    needles = [erased["name"], erased["email"], erased["external_id"], erased["organization"]]
    leftovers = asyncio.run(_columns_containing(stack.infra.database_url, needles))
    assert leftovers == []
    # The other participant is untouched: the check above does see personal data.
    kept = asyncio.run(_columns_containing(stack.infra.database_url, [people[1]["email"]]))
    assert any("matcher" in hit for hit in kept) and any("notifier" in hit for hit in kept)
    # The erased contact is never proposed again.
    rows = query(
        stack,
        "SELECT c.opted_out, c.deliverable, c.erased_at FROM matcher.contacts c "
        "JOIN matcher.proposal_participants pp ON pp.contact_id = c.id "
        "JOIN matcher.proposal_participants other ON other.proposal_id = pp.proposal_id "
        "JOIN matcher.identities i ON i.contact_id = other.contact_id "
        "WHERE i.source = 'e2e' AND i.external_id = $1 AND pp.contact_id <> other.contact_id",
        people[1]["external_id"],
    )
    assert [(r["opted_out"], r["deliverable"], r["erased_at"] is not None) for r in rows] == [
        (True, False, True)
    ]


def test_erasing_an_unknown_person_is_accepted_and_bad_paths_are_422(stack: Stack) -> None:
    with stack.client() as client:
        assert client.delete(f"/v1/contacts/e2e/nobody-{run_id()}").status_code == 202
        assert client.delete("/v1/contacts/Bad%20Source/x").status_code == 422
        assert client.post("/v1/contacts/Bad%20Source/x/opt-out").status_code == 422


def test_opt_out_stops_an_introduction_held_for_quiet_hours(stack: Stack) -> None:
    run = run_id()
    sleeping = new_person(run, 0, timezone=zone_at(3))  # 03:00 there: held until morning
    awake = new_person(run, 1, timezone=zone_at(12))
    rare = f"opt-out tested topic {run}"
    with stack.client() as client:
        _others(client, run)
        _post(client, "/v1/contacts", {"items": [sleeping, awake]})
        for i in (0, 1):
            _post(
                client,
                "/v1/interests",
                {"source": "e2e", "external_id": f"{run}-{i}", "topic": rare, "kind": "likes"},
            )
        assert stack.sink.wait_for(awake["email"], within=10), "no introduction in flight"

        def held() -> list[asyncpg.Record]:
            return query(
                stack,
                "SELECT status FROM notifier.deliveries "
                "WHERE recipient_source = 'e2e' AND recipient_external_id = $1",
                sleeping["external_id"],
            )

        assert [r["status"] for r in held()] == ["pending"]
        _post(client, f"/v1/contacts/e2e/{sleeping['external_id']}/opt-out")

    assert wait_until(lambda: [r["status"] for r in held()] == ["cancelled"]), held()
    assert wait_until(
        lambda: query(
            stack,
            "SELECT 1 FROM matcher.contacts c JOIN matcher.identities i ON i.contact_id = c.id "
            "WHERE i.source = 'e2e' AND i.external_id = $1 AND c.opted_out",
            sleeping["external_id"],
        )
    ), "the matcher did not record the opt-out"
    assert stack.sink.to(sleeping["email"]) == []


def test_erasing_a_merged_person_by_a_later_identity_leaves_nothing(stack: Stack) -> None:
    # Their introduction names their first identity; the erasure names the second one (merged
    # by the same email). The notifier held the introduction under the first.
    run = run_id()
    first, partner = new_person(run, 0), new_person(run, 1)
    second = new_person(run, 2, email=first["email"], name=f"Second Name {run}")
    rare = f"merged erasure topic {run}"
    with stack.client() as client:
        _others(client, run)
        _post(client, "/v1/contacts", {"items": [first, partner]})
        for person in (first, partner):
            _post(
                client,
                "/v1/interests",
                {"source": "e2e", "external_id": person["external_id"], "topic": rare},
            )
        assert stack.sink.wait_for(first["email"], within=10), "no introduction to erase"
        _post(client, "/v1/contacts", second)
        matcher = httpx.Client(base_url=stack.matcher_url, headers=client.headers, timeout=10)
        with matcher:

            def merged() -> bool:
                answer = matcher.get(f"/v1/contacts/e2e/{second['external_id']}/identity")
                refs = {i["external_id"] for i in answer.json().get("identities", [])}
                return answer.status_code == 200 and first["external_id"] in refs

            assert wait_until(merged), "the two identities were not merged"
        response = client.delete(f"/v1/contacts/e2e/{second['external_id']}")
        assert response.status_code == 202, response.text

    digests = [
        erasure_digest("e2e", person["external_id"], ERASURE_KEY.encode())
        for person in (first, second)
    ]
    assert wait_until(
        lambda: (
            len(query(stack, "SELECT 1 FROM notifier.erasures WHERE digest = ANY($1)", digests))
            == 2
        )
    ), "the notifier did not erase both identities"
    needles = [
        first["name"],
        second["name"],
        first["email"],
        first["external_id"],
        second["external_id"],
    ]
    assert wait_until(
        lambda: asyncio.run(_columns_containing(stack.infra.database_url, needles)) == []
    ), asyncio.run(_columns_containing(stack.infra.database_url, needles))
