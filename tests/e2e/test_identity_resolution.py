"""Identity resolution through the live services: the same person sent by two integrations is
merged, introduced to someone else once and never to themselves; `roac contacts unmerge` (the
real CLI) splits them again and the notifier hears of both."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.e2e.conftest import Stack, new_person, run_id
from tests.e2e.test_api_keys import roac
from tests.e2e.test_erasure import _others, query, wait_until

pytestmark = pytest.mark.e2e


def _post(client: httpx.Client, path: str, body: object) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 202, response.text


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
    crm = new_person(run, 0, email=email, source="crm")
    forum = new_person(run, 1, email=email, source="forum", name=f"Forum name {run}")
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

    unmerged_before = _consumed(stack, "contact.unmerged.v1")
    shown = roac(stack, "contacts", "show", "forum", forum["external_id"])
    assert shown.returncode == 0, shown.stderr
    assert "merge " in shown.stdout and f"crm/{crm['external_id']}" in shown.stdout
    done = roac(stack, "contacts", "unmerge", "forum", forum["external_id"])
    assert done.returncode == 0, done.stderr
    rows = query(
        stack,
        "SELECT source, contact_id FROM matcher.identities WHERE external_id = ANY($1)",
        [crm["external_id"], forum["external_id"]],
    )
    assert len({r["contact_id"] for r in rows}) == 2
    assert wait_until(lambda: _consumed(stack, "contact.unmerged.v1") > unmerged_before)
    again = roac(stack, "contacts", "unmerge", "forum", forum["external_id"])
    assert again.returncode == 1 and "no merge to undo" in again.stderr
