"""The link pages' templates follow the deployment's configuration like the messages do
(services/notifier/link_pages.py): a language the operator adds in ROAC_TEMPLATE_DIR is a
language the pages speak, and ROAC_DEFAULT_LANGUAGE is the pages' language for a person whose
own is unknown."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.notifier import link_pages
from services.notifier.link_pages import PageTemplates

SHIPPED = Path(link_pages.__file__).parent / "templates"


@pytest.fixture
def french(tmp_path: Path) -> Path:
    """An operator's template directory adding French: the German page's words, translated
    where the test looks (the layout is the shipped English one)."""
    german = (SHIPPED / "de" / "page.html.j2").read_text()
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "page.html.j2").write_text(
        german.replace("Vielen Dank!", "Merci !").replace("Erledigt", "Voilà")
    )
    return tmp_path


def test_a_language_in_the_operators_directory_is_one_the_pages_speak(french: Path) -> None:
    pages = PageTemplates(french)
    assert pages.choose(["fr-CA"], None) == "fr"
    assert pages.choose([None], "fr;q=0.9, it") == "fr"
    page = pages.render("page.html.j2", "fr", "accepted")
    assert "Merci !" in page and 'lang="fr"' in page
    # Pages the operator did not translate come from English, the shipped ones as shipped.
    assert "You met?" in pages.render("checkin.page.html.j2", "fr", "confirm_met")
    assert "Vielen Dank!" in pages.render("page.html.j2", "de", "accepted")
    # Without the directory there is no French: English.
    assert PageTemplates().choose(["fr"], None) == "en"


def test_the_default_language_is_the_pages_language_for_an_unknown_person() -> None:
    assert PageTemplates(default_language="de").choose([None], None) == "de"
    assert PageTemplates(default_language="de").choose([None], "en-GB") == "en"
    assert PageTemplates(default_language="de-AT").default == "de"
    # A default roac has no templates for is English.
    assert PageTemplates(default_language="xx").default == "en"


def test_configure_sets_the_templates_every_page_uses(french: Path) -> None:
    try:
        link_pages.configure(PageTemplates(french, "fr"))
        assert link_pages.choose([], None) == "fr"
        assert "Voilà" in link_pages.render("page.html.j2", "fr", "unsubscribed")
    finally:
        link_pages.configure(PageTemplates())
    assert link_pages.choose([], None) == "en"
