"""A pause set on a person's behalf, end to end against the live services: ingest's
`POST /v1/contacts/{source}/{id}/preferences` (what the console's pause sends) pauses them in
the matcher; the integration's next upsert of them, without `snoozed_until`, does not end it; a
round's dry run leaves them out as paused; their own preferences page (the link from their
introduction's email) says they are paused; `paused_until: null` ends it. A key bound to
another source is refused, a bad body is a 422, and a keyed retry publishes nothing new."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, new_person, run_id, running_stack
from tests.e2e.test_preferences import _introduce, _preferences_link
from tests.support.infra import API_KEY
from tests.support.processes import run_roac
from tests.support.rounds import dry_run, left_out
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    with running_stack(
        "behalf",
        tmp_path_factory.mktemp("behalf-logs"),
        request,
        ROAC_INTRO_MODE="direct",
        ROAC_MATCH_MIN_SCORE="0.1",
        ROAC_QUIET_HOURS_ENABLED="false",
    ) as created:
        yield created


def _matcher(stack: Stack) -> httpx.Client:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.Client(base_url=stack.matcher_url, headers=headers, timeout=15)


def _held(stack: Stack, external_id: str) -> dict[str, Any]:
    """What the matcher holds about the person (its read-back)."""
    with _matcher(stack) as matcher:
        response = matcher.get(f"/v1/contacts/e2e/{external_id}")
    assert response.status_code == 200, response.text
    held: dict[str, Any] = response.json()
    return held


def _snoozed_until(stack: Stack, external_id: str) -> datetime | None:
    until = _held(stack, external_id)["snoozed_until"]
    return datetime.fromisoformat(until) if until else None


def test_a_pause_on_their_behalf_outlasts_the_integrations_upsert_until_resumed(
    stack: Stack,
) -> None:
    run = run_id()
    tag = f"t{run}"
    person, partner = new_person(run, 0, tags=[tag]), new_person(run, 1, tags=[tag])
    _introduce(stack, [person, partner], f"paper kites {run}")
    link = _preferences_link(stack.sink.wait_for(person["email"], within=15)[0].text)
    assert "Introductions are paused until" not in httpx.get(link).text

    # The community manager pauses them, as they asked by email (keyed: a retry is harmless).
    until = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    path = f"/v1/contacts/e2e/{person['external_id']}/preferences"
    with stack.client(headers={"Idempotency-Key": f"pause-{run}"}) as client:
        paused = client.post(path, json={"paused_until": until.isoformat()})
        again = client.post(path, json={"paused_until": until.isoformat()})
    assert paused.status_code == again.status_code == 202, paused.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["event_ids"] == paused.json()["event_ids"]
    assert len(paused.json()["event_ids"]) == 1
    eventually(lambda: _snoozed_until(stack, person["external_id"]) == until)

    # The CRM's nightly sync: the same person, renamed, without snoozed_until. Still paused.
    synced = {**person, "name": f"{person['name']} (synced)"}
    with stack.client() as client:
        assert client.post("/v1/contacts", json=synced).status_code == 202
    eventually(lambda: _held(stack, person["external_id"])["name"] == synced["name"])
    assert _snoozed_until(stack, person["external_id"]) == until

    # A round leaves them out, as paused.
    with _matcher(stack) as matcher:
        created = matcher.post("/v1/pools", json={"name": f"p{run}", "selector": {"tags": [tag]}})
        assert created.status_code == 201, created.text
    plan = dry_run(stack.matcher_url, f"p{run}")
    assert left_out(plan, person["external_id"]) == f"paused until {until.date().isoformat()}"

    # Their own preferences page says so.
    eventually(lambda: "Introductions are paused until" in httpx.get(link).text)

    # Resuming: null ends the pause, in the matcher and on their page.
    with stack.client() as client:
        assert client.post(path, json={"paused_until": None}).status_code == 202
    eventually(lambda: _snoozed_until(stack, person["external_id"]) is None)
    eventually(lambda: "Introductions are paused until" not in httpx.get(link).text)
    # (The pool's only other member was introduced to them already: left out, but not paused.)
    reason = left_out(dry_run(stack.matcher_url, f"p{run}"), person["external_id"]) or ""
    assert not reason.startswith("paused"), reason


def test_a_key_of_another_source_is_refused_and_a_bad_body_is_a_422(stack: Stack) -> None:
    run = run_id()
    created = run_roac(
        stack.env,
        "keys",
        "create",
        f"other-{run}",
        "--scope",
        "preferences:write",
        "--source",
        "other",
    )
    assert created.returncode == 0, created.stderr
    other_key = created.stdout.strip()
    path = f"/v1/contacts/e2e/{run}/preferences"
    body = {"paused_until": "2030-01-01T00:00:00Z"}
    with stack.client(headers={"Authorization": f"Bearer {other_key}"}) as client:
        assert client.post(path, json=body).status_code == 403
        # Its own source is fine.
        assert client.post(f"/v1/contacts/other/{run}/preferences", json=body).status_code == 202
    with stack.client() as client:
        for bad in (
            {},
            {"paused_until": "2030-01-01T00:00:00"},  # no time zone
            {"paused_until": "next week"},
            {"cap_per_week": 0},
            {"language": "de\u0000"},
            {"snoozed_until": "2030-01-01T00:00:00Z"},  # not a preference
        ):
            response = client.post(path, json=bad)
            assert response.status_code == 422, (bad, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
        empty = client.post(path, json={}).json()
        assert "sets none of" in str(empty["errors"]), empty
