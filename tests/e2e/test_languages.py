"""A person's language, end to end: a contact sent with `language: de` gets German asks and a
German introduction; the other person, without a language, gets English ones."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Stack, new_person, run_id, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def languages(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    with running_stack(
        "languages",
        tmp_path_factory.mktemp("languages-logs"),
        request,
        ROAC_INTRO_MODE="double_opt_in",
        ROAC_MATCH_MIN_SCORE="0.1",
        ROAC_QUIET_HOURS_ENABLED="false",
    ) as stack:
        yield stack


def _link(text: str, label: str) -> str:
    found = re.search(rf"{label}:\s+(\S+)", text)
    assert found, text
    return found[1]


def test_a_german_contact_gets_german_asks_and_introductions(languages: Stack) -> None:
    run = run_id()
    greta = new_person(run, 0, language="de-AT")
    ed = new_person(run, 1)
    with languages.client() as client:
        assert client.post("/v1/contacts", json={"items": [greta, ed]}).status_code == 202
        for person in (greta, ed):
            interest = {
                "source": "e2e",
                "external_id": person["external_id"],
                "topic": f"moss {run}",
            }
            assert client.post("/v1/interests", json=interest).status_code == 202
    [ask_de] = languages.sink.wait_for(greta["email"], within=15)
    [ask_en] = languages.sink.wait_for(ed["email"], within=15)
    assert ask_de.text.startswith(f"Hallo {greta['name']},")
    assert "Jemand, dem moss" in ask_de.text
    assert ask_en.text.startswith(f"Hi {ed['name']},")
    httpx.post(_link(ask_de.text, "Ja, stellt uns vor"))
    httpx.post(_link(ask_en.text, "Yes, introduce me"))
    to_greta = languages.sink.wait_for(greta["email"], count=2, within=15)
    to_ed = languages.sink.wait_for(ed["email"], count=2, within=15)
    assert any(f"ich möchte Ihnen {ed['name']} vorstellen." in m.text for m in to_greta)
    assert any(f"I'd like to introduce you to {greta['name']}." in m.text for m in to_ed)


def test_a_language_tag_that_is_not_one_is_refused(languages: Stack) -> None:
    with languages.client() as client:
        refused = client.post("/v1/contacts", json=new_person(run_id(), 0, language="klingon!"))
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "language"
