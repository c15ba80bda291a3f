"""A person's right of access against the live services: `GET /v1/contacts/{source}/{id}` on
ingest gathers what the matcher and the notifier hold about them into one document, read with
the caller's own key in each service; refused keys, unknown people and a service that does not
answer get a problem document, never a partial answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.conftest import Stack, new_person, run_id, running_stack
from tests.support.processes import run_roac
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    with running_stack(
        "access",
        tmp_path_factory.mktemp("access-logs"),
        request,
        ROAC_INTRO_MODE="direct",
        ROAC_MATCH_MIN_SCORE="0.1",
        ROAC_QUIET_HOURS_ENABLED="false",
    ) as stack:
        yield stack


def _key(stack: Stack, name: str, *args: str) -> str:
    created = run_roac(stack.env, "keys", "create", name, *args)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def _introduced_pair(stack: Stack, run: str) -> list[dict[str, Any]]:
    people = [
        new_person(run, 0, external_id=f"{run}/0", tags=["mentors"]),
        new_person(run, 1),
    ]
    with stack.client() as ingest:
        for person in people:
            assert ingest.post("/v1/contacts", json=person).status_code == 202
        items = [
            {"source": "e2e", "external_id": p["external_id"], "topic": f"kelp farming {run}"}
            for p in people
        ]
        assert ingest.post("/v1/interests", json={"items": items}).status_code == 202
    stack.sink.wait_for(people[0]["email"], within=20)
    return people


def _path(person: dict[str, Any]) -> str:
    return f"/v1/contacts/{person['source']}/{quote(person['external_id'], safe='')}"


def test_one_document_holds_the_profile_interests_and_introductions(live: Stack) -> None:
    run = run_id()
    first, second = _introduced_pair(live, run)
    with live.client() as ingest:
        answer = eventually(
            lambda: (
                (a := ingest.get(_path(first))).status_code == 200
                and a.json()["introductions"]
                and a
            )
        )
    held = answer.json()
    assert held["person"] == {"source": "e2e", "external_id": first["external_id"]}
    assert held["name"] == first["name"] and held["organization"] == first["organization"]
    assert held["tags"] == ["mentors"] and held["opted_out"] is False
    assert held["identities"] == [{"source": "e2e", "external_id": first["external_id"]}]
    assert [i["topic"] for i in held["interests"]] == [f"kelp farming {run}"]
    assert {"type": "email", "address": first["email"]} in held["channels"]
    assert held["contact_event"]["name"] == first["name"]  # as the integration sent it
    assert (
        held["preferences"]["paused_until"] is None and held["preferences"]["channel_order"] == []
    )
    assert held["truncated"] == {"interests": False, "blocks": False, "introductions": False}
    [intro] = held["introductions"]
    assert intro["state"] == "introduced" and intro["others"] == 1
    # Introduced: the other person's name is theirs to know by now; nothing else of them is.
    assert intro["introduced_to"] == [second["name"]]
    assert second["email"] not in answer.text and second["external_id"] not in answer.text
    assert intro["topics"] == [f"kelp farming {run}"]
    # The calls between services name the person in their URLs: none of it reaches a log.
    for process in live.processes:
        assert first["external_id"].split("/")[0] not in process.log_path.read_text()


def test_each_service_checks_the_callers_own_key(live: Stack) -> None:
    run = run_id()
    first, _second = _introduced_pair(live, run)
    no_intros = _key(live, f"noin{run}", "--scope", "contacts:read", "--source", "e2e")
    other_source = _key(
        live, f"crm{run}", "--scope", "contacts:read", "--scope", "intros:read", "--source", "crm"
    )
    headers = {"Authorization": f"Bearer {no_intros}"}
    with httpx.Client(base_url=live.ingest_url, headers=headers, timeout=15) as ingest:
        # The key reaches the running services at once (NOTIFY) or within seconds.
        refused = eventually(lambda: (a := ingest.get(_path(first))).status_code == 403 and a)
        assert "intros:read" in refused.json()["detail"]
    headers = {"Authorization": f"Bearer {other_source}"}
    with httpx.Client(base_url=live.ingest_url, headers=headers, timeout=15) as ingest:
        refused = eventually(lambda: (a := ingest.get(_path(first))).status_code == 403 and a)
        assert "e2e" in refused.json()["detail"]
    headers = {"Authorization": "Bearer not-a-key"}
    with httpx.Client(base_url=live.ingest_url, headers=headers, timeout=15) as ingest:
        assert ingest.get(_path(first)).status_code == 401
    with live.client() as ingest:
        unknown = ingest.get(f"/v1/contacts/e2e/nobody-{run}")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")
        assert ingest.get("/v1/contacts/e2e/%00").status_code == 422


def test_a_service_that_does_not_answer_gets_a_503_not_half_an_answer(live: Stack) -> None:
    run = run_id()
    first, _second = _introduced_pair(live, run)
    live.notifier.stop()
    try:
        with live.client() as ingest:
            answer = ingest.get(_path(first))
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert "introductions" not in answer.text
    finally:
        live.notifier.start()
    with live.client() as ingest:
        assert ingest.get(_path(first)).status_code == 200
