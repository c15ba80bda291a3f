"""Identity resolution through the live services: the same person sent by two verified
integrations is merged, reached on the older identity's channels, introduced to someone else
once and never to themselves, and the merge and its reason are shown by the matcher's API;
`roac contacts unmerge` (the real CLI) splits them again and the notifier hears of both. An
integration that is not verified cannot merge into someone by sending their email, nor
redirect their introductions to its own channel."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, new_person, run_id, running_stack
from tests.e2e.test_api_keys import roac
from tests.e2e.test_erasure import _others, query, wait_until
from tests.support.infra import API_KEY

pytestmark = pytest.mark.e2e

# crm and forum verify the emails they send; e2e (the other people) and evil do not.
VERIFIED = "crm,forum"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """Direct introductions, as the session's stack, with crm and forum verified."""
    with running_stack(
        "identity",
        tmp_path_factory.mktemp("identity-logs"),
        request,
        ROAC_INTRO_MODE="direct",
        ROAC_IDENTITY_VERIFIED_SOURCES=VERIFIED,
    ) as created:
        yield created


def _post(client: httpx.Client, path: str, body: object) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 202, response.text


def _identity(
    stack: Stack, source: str, external_id: str, *, maybe_missing: bool = False
) -> dict[str, Any]:
    """GET /v1/contacts/{source}/{external_id}/identity (maybe_missing: {} for a 404, the
    contact event not applied yet)."""
    response = httpx.get(
        f"{stack.matcher_url}/v1/contacts/{source}/{external_id}/identity",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    if maybe_missing and response.status_code == 404:
        return {}
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def _refused(stack: Stack) -> float:
    metrics = httpx.get(f"{stack.matcher_url}/metrics", timeout=5).text
    found = re.search(
        r'^roac_matcher_merges_refused_total\{matched_on="email"\} ([0-9.e+]+)$',
        metrics,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


def _consumed(stack: Stack, event_type: str) -> float:
    metrics = httpx.get(f"{stack.notifier_url}/metrics", timeout=5).text
    pattern = (
        r'^roac_events_consumed_total\{outcome="processed",service="notifier",'
        rf'type="{re.escape(event_type)}"\}} ([0-9.e+]+)$'
    )
    found = re.search(pattern, metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_one_person_from_two_sources_is_merged_and_can_be_unmerged(stack: Stack) -> None:
    run = run_id()
    email = f"merged.{run}@example.org"
    topic = f"identity-tested topic {run}"
    alternate = f"forum-only.{run}@example.org"
    crm = new_person(run, 0, email=email, source="crm")
    # The newer identity lists another address first: the person is still reached on crm's.
    forum = new_person(
        run,
        1,
        email=email,
        source="forum",
        name=f"Forum name {run}",
        channels=[{"type": "email", "address": alternate}, {"type": "email", "address": email}],
    )
    other = new_person(run, 2)
    merged_before = _consumed(stack, "contact.merged.v1")
    with stack.client() as client:
        _others(client, run)  # a shared topic is rare only among many
        _post(client, "/v1/contacts", crm)
        _post(client, "/v1/contacts", forum)
        for person in (crm, forum):
            _post(
                client,
                "/v1/interests",
                {"source": person["source"], "external_id": person["external_id"], "topic": topic},
            )

        def one_contact() -> bool:
            rows = query(
                stack,
                "SELECT DISTINCT contact_id FROM matcher.identities WHERE external_id = ANY($1)",
                [crm["external_id"], forum["external_id"]],
            )
            return len(rows) == 1

        assert wait_until(one_contact), "the two identities were not merged"
        assert wait_until(lambda: _consumed(stack, "contact.merged.v1") > merged_before)
        # Someone else with the topic: one introduction, to the person once.
        _post(client, "/v1/contacts", other)
        _post(
            client,
            "/v1/interests",
            {"source": "e2e", "external_id": other["external_id"], "topic": topic},
        )
        intros = stack.sink.wait_for(other["email"], within=15)
        assert len(intros) == 1, "no introduction to the third person"
        time.sleep(1.0)  # anything else would have arrived by now
        to_person = stack.sink.to(email)
        assert len(to_person) == 1
        assert other["name"] in to_person[0].text
        assert stack.sink.to(alternate) == []

    shown_by_api = _identity(stack, "forum", forum["external_id"])
    assert (shown_by_api["source"], shown_by_api["external_id"]) == ("crm", crm["external_id"])
    assert {(i["source"], i["external_id"]) for i in shown_by_api["identities"]} == {
        ("crm", crm["external_id"]),
        ("forum", forum["external_id"]),
    }
    (merge,) = shown_by_api["merges"]
    assert merge["reason"] == "verified_sources" and merge["matched_on"] == "email"
    assert merge["sources"] == ["crm", "forum"] and merge["undone_at"] is None
    assert merge["identities"] == [{"source": "forum", "external_id": forum["external_id"]}]
    assert email not in str(shown_by_api)  # the key it matched on, never its value

    unmerged_before = _consumed(stack, "contact.unmerged.v1")
    shown = roac(stack, "contacts", "show", "forum", forum["external_id"])
    assert shown.returncode == 0, shown.stderr
    assert "merge " in shown.stdout and f"crm/{crm['external_id']}" in shown.stdout
    # Through the matcher's API (what the console calls), as `roac contacts unmerge` does.
    done = httpx.post(
        f"{stack.matcher_url}/v1/contacts/forum/{forum['external_id']}/unmerge",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={},
        timeout=10,
    )
    assert done.status_code == 200, done.text
    assert done.json()["merge_id"] == merge["merge_id"]
    assert done.json()["restored"] == [{"source": "forum", "external_id": forum["external_id"]}]
    assert done.json()["remaining"] == [{"source": "crm", "external_id": crm["external_id"]}]
    rows = query(
        stack,
        "SELECT source, contact_id FROM matcher.identities WHERE external_id = ANY($1)",
        [crm["external_id"], forum["external_id"]],
    )
    assert len({r["contact_id"] for r in rows}) == 2
    assert wait_until(lambda: _consumed(stack, "contact.unmerged.v1") > unmerged_before)
    again = roac(stack, "contacts", "unmerge", "forum", forum["external_id"])
    assert again.returncode == 1 and "no merge to undo" in again.stderr
    refused = httpx.post(
        f"{stack.matcher_url}/v1/contacts/forum/{forum['external_id']}/unmerge",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={},
        timeout=10,
    )
    assert refused.status_code == 409 and "no merge to undo" in refused.text
    # The history keeps the merge, now undone, on both sides.
    for source, person in (("crm", crm), ("forum", forum)):
        (undone,) = _identity(stack, source, person["external_id"])["merges"]
        assert undone["merge_id"] == merge["merge_id"] and undone["undone_at"] is not None


def test_an_unverified_integration_cannot_take_over_someone_by_their_email(stack: Stack) -> None:
    """The hijack: `evil` upserts a contact with the victim's email and its own address first.
    Not merged, and the victim's introduction still reaches the victim, and only the victim."""
    run = run_id()
    victim_email = f"victim.{run}@example.org"
    attacker = f"attacker.{run}@evil.example"
    topic = f"hijack-tested topic {run}"
    victim = new_person(run, 0, email=victim_email, source="crm")
    partner = new_person(run, 1, source="crm")
    hijacker = new_person(
        run,
        2,
        source="evil",
        name=f"Not the victim {run}",
        email=victim_email,
        channels=[
            {"type": "email", "address": attacker},
            {"type": "email", "address": victim_email},
        ],
    )
    refused_before = _refused(stack)
    with stack.client() as client:
        _others(client, run)
        _post(client, "/v1/contacts", victim)
        _post(client, "/v1/contacts", hijacker)
        assert wait_until(lambda: _refused(stack) > refused_before), "no refused merge counted"
        rows = query(
            stack,
            "SELECT source, contact_id FROM matcher.identities WHERE external_id = ANY($1)",
            [victim["external_id"], hijacker["external_id"]],
        )
        assert len(rows) == 2 and len({r["contact_id"] for r in rows}) == 2
        _post(client, "/v1/contacts", partner)
        for person in (victim, partner):
            _post(
                client,
                "/v1/interests",
                {"source": "crm", "external_id": person["external_id"], "topic": topic},
            )
        intros = stack.sink.wait_for(victim_email, within=15)
        assert len(intros) == 1, "no introduction reached the victim"
        assert partner["name"] in intros[0].text
        assert len(stack.sink.wait_for(partner["email"], within=5)) == 1
        time.sleep(1.0)  # anything else would have arrived by now
        assert stack.sink.to(attacker) == []
        assert hijacker["name"] not in intros[0].text
    shown = _identity(stack, "crm", victim["external_id"])
    assert shown["identities"] == [{"source": "crm", "external_id": victim["external_id"]}]
    assert shown["merges"] == []
    assert _identity(stack, "evil", hijacker["external_id"])["merges"] == []
    # Neither the refusal nor anything else put the address in the matcher's log or metrics.
    assert victim_email not in stack.matcher.tail(100_000)
    assert victim_email not in httpx.get(f"{stack.matcher_url}/metrics", timeout=5).text


def test_two_identities_of_one_source_merge_with_their_reason(stack: Stack) -> None:
    run = run_id()
    email = f"twice.{run}@example.org"
    first, second = (new_person(run, i, email=email) for i in (0, 1))  # both source e2e
    with stack.client() as client:
        _post(client, "/v1/contacts", first)
        _post(client, "/v1/contacts", second)

    def merged() -> bool:
        return bool(
            _identity(stack, "e2e", second["external_id"], maybe_missing=True).get("merges")
        )

    assert wait_until(merged), "two identities of one source were not merged"
    (merge,) = _identity(stack, "e2e", first["external_id"])["merges"]
    assert merge["reason"] == "same_source" and merge["sources"] == ["e2e", "e2e"]
    assert merge["identities"] == [{"source": "e2e", "external_id": second["external_id"]}]
