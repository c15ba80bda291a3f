"""A person's language, end to end: a contact sent with `language: de` gets German asks, a German
introduction and a German check-in ("did you meet?"), and the pages their links open are German
too; the other person, without a language or with one roac has no templates for (`fr`), gets
English ones."""

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
        # "Did you meet?" seconds after an introduction (7 days by default).
        ROAC_CHECKIN_AFTER_SECONDS="2",
        ROAC_EXPIRY_SWEEP_SECONDS="0.5",
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


def test_a_german_contact_gets_a_german_check_in_and_german_pages_and_french_falls_back(
    languages: Stack,
) -> None:
    run = run_id()
    greta = new_person(run, 0, language="de")
    france = new_person(run, 1, language="fr-CH")  # no French templates: English
    with languages.client() as client:
        assert client.post("/v1/contacts", json={"items": [greta, france]}).status_code == 202
        for person in (greta, france):
            interest = {
                "source": "e2e",
                "external_id": person["external_id"],
                "topic": f"lichen {run}",
            }
            assert client.post("/v1/interests", json=interest).status_code == 202
    [ask_de] = languages.sink.wait_for(greta["email"], within=15)
    [ask_en] = languages.sink.wait_for(france["email"], within=15)
    # The page an ask's link opens speaks the person's language, whatever the browser says.
    accept_de = _link(ask_de.text, "Ja, stellt uns vor")
    page = httpx.get(accept_de, headers={"Accept-Language": "en-US"})
    assert '<html lang="de">' in page.text and "Jemanden kennenlernen?" in page.text
    assert "Vielen Dank!" in httpx.post(accept_de).text
    accept_en = _link(ask_en.text, "Yes, introduce me")
    assert "Meet someone new?" in httpx.get(accept_en).text
    assert "Thank you!" in httpx.post(accept_en).text

    checkin_de = languages.sink.wait_for(greta["email"], count=3, within=20)[0]
    checkin_en = languages.sink.wait_for(france["email"], count=3, within=20)[0]
    assert checkin_de.subject == f"Haben Sie {france['name']} getroffen?"
    assert checkin_de.text.startswith(f"Hallo {greta['name']},")
    assert "Ihre Einstellungen: " in checkin_de.text and 'lang="de"' in checkin_de.html
    assert checkin_en.subject == f"Did you meet {greta['name']}?"
    assert "Your preferences: " in checkin_en.text

    met_de = _link(checkin_de.text, "Wir haben uns getroffen")
    page = httpx.get(met_de)
    assert page.status_code == 200 and '<html lang="de">' in page.text
    assert "Sie haben sich getroffen?" in page.text and "Ja, wir haben uns getroffen" in page.text
    answered = httpx.post(met_de)
    assert "Schön, dass Sie sich getroffen haben." in answered.text
    assert "Bewertung senden" in answered.text  # the rating form, German too
    # The English fallback: the page in English (the browser asks for nothing roac has).
    met_en = _link(checkin_en.text, "We met")
    page = httpx.get(met_en, headers={"Accept-Language": "fr-CH, fr;q=0.9"})
    assert '<html lang="en">' in page.text and "You met?" in page.text
    assert "Glad you met." in httpx.post(met_en).text


def test_a_language_tag_that_is_not_one_is_refused(languages: Stack) -> None:
    with languages.client() as client:
        refused = client.post("/v1/contacts", json=new_person(run_id(), 0, language="klingon!"))
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "language"
