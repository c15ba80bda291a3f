"""Withdrawing one interest and reading back what roac holds about a person, against the live
services: `DELETE /v1/interests/{source}/{external_id}?topic=&kind=` on ingest (and the AMQP
ingress's `interests.withdraw`) stops matching the person on that topic only, and
`GET /v1/contacts/{source}/{external_id}` on the matcher shows exactly what was sent, minus
what was withdrawn; keys bound to another source are refused both."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aio_pika
import asyncpg
import httpx
import pytest

from shared.topology import INGRESS_EXCHANGE
from tests.e2e.conftest import Stack, new_person, run_id, running_stack
from tests.support.amqp import connect
from tests.support.infra import API_KEY
from tests.support.processes import run_roac
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    with running_stack(
        "withdrawal",
        tmp_path_factory.mktemp("withdrawal-logs"),
        request,
        ROAC_INTRO_MODE="direct",
        ROAC_MATCH_MIN_SCORE="0.1",
        ROAC_QUIET_HOURS_ENABLED="false",
    ) as stack:
        yield stack


def _client(base_url: str, key: str = API_KEY) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=15)


def _query(stack: Stack, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.infra.database_url)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(run())


def _held(stack: Stack, source: str, external_id: str) -> dict[str, Any] | None:
    with _client(stack.matcher_url) as matcher:
        answer = matcher.get(f"/v1/contacts/{source}/{quote(external_id, safe='')}")
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def _topics(held: dict[str, Any] | None) -> set[tuple[str, str]]:
    return {(i["topic"], i["kind"]) for i in (held or {}).get("interests", [])}


def _topic_people(stack: Stack, topic: str) -> int | None:
    rows = _query(stack, "SELECT people FROM matcher.topics WHERE name = $1", topic)
    return rows[0]["people"] if rows else None


def _proposals_of(stack: Stack, external_id: str) -> int:
    rows = _query(
        stack,
        """
        SELECT count(*) AS n FROM matcher.proposal_participants p
        JOIN matcher.identities i ON i.contact_id = p.contact_id
        WHERE i.source = 'e2e' AND i.external_id = $1
        """,
        external_id,
    )
    return int(rows[0]["n"])


def test_a_withdrawn_interest_is_no_longer_matched_while_the_other_still_is(live: Stack) -> None:
    run = run_id()
    ada, bo, cy = (new_person(run, i) for i in range(3))
    kites, knots = f"kites {run}", f"sailing knots {run}"
    with live.client() as ingest:
        assert ingest.post("/v1/contacts", json={"items": [ada, bo, cy]}).status_code == 202
        items = [
            {"source": "e2e", "external_id": ada["external_id"], "topic": t, "kind": "likes"}
            for t in (kites, knots)
        ]
        assert ingest.post("/v1/interests", json={"items": items}).status_code == 202
        eventually(lambda: len(_topics(_held(live, "e2e", ada["external_id"]))) == 2)
        assert _topic_people(live, kites) == 1

        withdrawn = ingest.delete(
            f"/v1/interests/e2e/{ada['external_id']}",
            params={"topic": "  KITES " + run, "kind": "likes"},  # normalised as declared
            headers={"Idempotency-Key": f"w-{run}"},
        )
        assert withdrawn.status_code == 202, withdrawn.text
        assert withdrawn.json()["accepted"] == 1
        again = ingest.delete(
            f"/v1/interests/e2e/{ada['external_id']}",
            params={"topic": "  KITES " + run, "kind": "likes"},
            headers={"Idempotency-Key": f"w-{run}"},
        )
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json()["event_ids"] == withdrawn.json()["event_ids"]
        eventually(lambda: _topics(_held(live, "e2e", ada["external_id"])) == {(knots, "likes")})
        assert _topic_people(live, kites) == 0  # nobody holds it any more

        # Bo shares only the withdrawn topic: nobody to meet. Cy shares the kept one: Ada.
        bo_kites = {"source": "e2e", "external_id": bo["external_id"], "topic": kites}
        assert ingest.post("/v1/interests", json=bo_kites).status_code == 202
        eventually(lambda: _topics(_held(live, "e2e", bo["external_id"])))
        cy_knots = {"source": "e2e", "external_id": cy["external_id"], "topic": knots}
        assert ingest.post("/v1/interests", json=cy_knots).status_code == 202
    assert live.sink.wait_for(cy["email"], within=20), "Ada and Cy were not introduced"
    [intro] = live.sink.wait_for(ada["email"], within=20)
    assert cy["name"] in intro.text and bo["name"] not in intro.text
    assert _proposals_of(live, bo["external_id"]) == 0
    assert live.sink.to(bo["email"]) == []
    assert _topic_people(live, kites) == 1  # Bo


def test_withdrawing_an_interest_the_person_does_not_hold_changes_nothing(live: Stack) -> None:
    run = run_id()
    person = new_person(run, 0)
    seeks = {"source": "e2e", "external_id": person["external_id"], "topic": f"tea {run}"}
    with live.client() as ingest:
        assert ingest.post("/v1/contacts", json=person).status_code == 202
        assert ingest.post("/v1/interests", json={**seeks, "kind": "seeks"}).status_code == 202
        eventually(lambda: _topics(_held(live, "e2e", person["external_id"])))
        path = f"/v1/interests/e2e/{person['external_id']}"
        # Another kind of the topic, a topic they never had, someone roac never heard of.
        for params, where in [
            ({"topic": f"tea {run}", "kind": "offers"}, path),
            ({"topic": f"coffee {run}"}, path),
            ({"topic": f"tea {run}"}, f"/v1/interests/e2e/nobody-{run}"),
        ]:
            assert ingest.delete(where, params=params).status_code == 202
        bad = ingest.delete(path, params={"topic": f"tea {run}", "kind": "loves"})
        assert bad.status_code == 422
        assert ingest.delete(path).status_code == 422  # the topic is required
        # A marker after them: once it is applied, so are they (one queue, in order).
        marker = {**seeks, "topic": f"marker {run}"}
        assert ingest.post("/v1/interests", json=marker).status_code == 202
        eventually(lambda: len(_topics(_held(live, "e2e", person["external_id"]))) == 2)
    time.sleep(1.0)  # events of another type may be applied beside the marker, not after it
    assert _topics(_held(live, "e2e", person["external_id"])) == {
        (f"tea {run}", "seeks"),
        (f"marker {run}", "likes"),
    }
    assert _topic_people(live, f"tea {run}") == 1
    assert _topic_people(live, f"coffee {run}") is None  # no topic made up by a withdrawal
    assert _held(live, "e2e", f"nobody-{run}") is None


def test_read_back_shows_exactly_what_was_sent_minus_the_withdrawn_interest(live: Stack) -> None:
    run = run_id()
    person = new_person(
        run,
        0,
        external_id=f"{run}/slash",  # ids may hold a slash (%2F in the path)
        language="de",
        tags=["berlin", "mentors"],
        channels=[{"type": "slack", "address": "U024BE7LH"}],
        snoozed_until="2099-01-01T00:00:00+00:00",
    )
    interests = [
        {"topic": f"bees {run}", "kind": "offers", "weight": 2.5},
        {"topic": f"hives {run}", "kind": "seeks", "weight": 0.5},
    ]
    ref = {"source": "e2e", "external_id": person["external_id"]}
    with live.client() as ingest:
        assert ingest.post("/v1/contacts", json=person).status_code == 202
        body = {"items": [{**ref, **i} for i in interests]}
        assert ingest.post("/v1/interests", json=body).status_code == 202
        eventually(lambda: len(_topics(_held(live, "e2e", person["external_id"]))) == 2)
        quoted = quote(person["external_id"], safe="")
        withdrawn = ingest.delete(f"/v1/interests/e2e/{quoted}", params={"topic": f"hives {run}"})
        assert withdrawn.status_code == 202
    held = eventually(
        lambda: (h := _held(live, "e2e", person["external_id"])) and len(h["interests"]) == 1 and h
    )
    assert {k: held[k] for k in ("source", "external_id", "name", "organization")} == {
        k: person[k] for k in ("source", "external_id", "name", "organization")
    }
    assert held["timezone"] == person["timezone"] and held["language"] == "de"
    assert held["tags"] == ["berlin", "mentors"]
    # The email address comes first when the channels did not list it (ingest adds it).
    assert held["channels"] == [
        {"type": "email", "address": person["email"]},
        {"type": "slack", "address": "U024BE7LH"},
    ]
    assert held["snoozed_until"].startswith("2099-01-01T00:00:00")
    assert held["opted_out"] is False
    assert held["identities"] == [ref]
    assert held["blocks"] == []
    [interest] = held["interests"]
    assert {k: interest[k] for k in ("topic", "kind", "weight")} == interests[0]
    assert interest["declared_at"]


def _roac(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return run_roac(stack.env, *args)


def test_a_key_bound_to_another_source_is_refused_both(live: Stack) -> None:
    run = run_id()
    created = _roac(
        live,
        *("keys", "create", f"crm{run}", "--source", "crm"),
        *("--scope", "events:write", "--scope", "contacts:read"),
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    person = new_person(run, 0)
    with live.client() as ingest:
        assert ingest.post("/v1/contacts", json=person).status_code == 202
    eventually(lambda: _held(live, "e2e", person["external_id"]))
    with _client(live.ingest_url, key) as ingest:
        # The key reaches the running services at once (NOTIFY) or within seconds.
        eventually(
            lambda: (
                ingest.delete(f"/v1/interests/crm/{run}", params={"topic": "x"}).status_code == 202
            )
        )
        refused = ingest.delete(f"/v1/interests/e2e/{person['external_id']}", params={"topic": "x"})
        assert refused.status_code == 403 and "e2e" in refused.json()["detail"]
    with _client(live.matcher_url, key) as matcher:
        assert matcher.get(f"/v1/contacts/crm/{run}").status_code == 404
        refused = matcher.get(f"/v1/contacts/e2e/{person['external_id']}")
        assert refused.status_code == 403 and "e2e" in refused.json()["detail"]
    with _client(live.matcher_url, "not-a-key") as matcher:
        assert matcher.get(f"/v1/contacts/e2e/{person['external_id']}").status_code == 401


async def _publish(url: str, routing_key: str, message_id: str, body: Any) -> None:
    connection = await connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(INGRESS_EXCHANGE.name)
        await exchange.publish(
            aio_pika.Message(
                json.dumps(body).encode(),
                message_id=message_id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )


def test_the_amqp_ingress_withdraws_as_the_delete_route_does(live: Stack) -> None:
    run = run_id()
    person = new_person(run, 0)
    ref = {"source": "e2e", "external_id": person["external_id"]}
    with live.client() as ingest:
        assert ingest.post("/v1/contacts", json=person).status_code == 202
        body = {"items": [{**ref, "topic": f"{t} {run}"} for t in ("moss", "lichen")]}
        assert ingest.post("/v1/interests", json=body).status_code == 202
    eventually(lambda: len(_topics(_held(live, "e2e", person["external_id"]))) == 2)
    withdrawal = {"items": [{**ref, "topic": f"Moss {run}", "kind": "likes"}]}
    asyncio.run(_publish(live.infra.amqp_url, "interests.withdraw", f"w-{run}", withdrawal))
    eventually(
        lambda: _topics(_held(live, "e2e", person["external_id"])) == {(f"lichen {run}", "likes")}
    )
