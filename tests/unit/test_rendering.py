from email import message_from_bytes, policy
from pathlib import Path
from uuid import uuid4

import pytest
from jinja2 import Environment, meta
from jinja2 import nodes as jinja_nodes
from pydantic import ValidationError

from services.notifier import link_pages
from services.notifier.email_message import build_email, sender_domain
from services.notifier.rendering import Links, MessageRenderer, Style, Trusted, escape
from shared.events import (
    ChannelAddress,
    ChannelType,
    ContactRef,
    DeliveryKind,
    IntroData,
    IntroTopic,
    Participant,
    TopicRelation,
)

ASK, INTRO = DeliveryKind.ASK, DeliveryKind.INTRO
LINKS = Links(
    accept=Trusted("https://roac.example.org/links/accept-token"),
    decline=Trusted("https://roac.example.org/links/decline-token"),
    unsubscribe=Trusted("https://roac.example.org/links/unsub-token"),
)


def _person(i: str, name: str, org: str | None = None) -> Participant:
    return Participant(
        source="crm",
        external_id=i,
        name=name,
        organization=org,
        channels=[ChannelAddress(type=ChannelType.EMAIL, address=f"{i}@example.org")],
    )


def _intro(*people: Participant, topics: list[IntroTopic]) -> IntroData:
    return IntroData(
        proposal_id=uuid4(), participants=list(people), topics=topics, score=2.0, reason="r"
    )


ada, bob = (
    _person("ada", "Ada Lovelace", "Analytical"),
    _person("bob", "Bob <script>alert(1)</script>"),
)
KITES = IntroTopic(topic="kite aerial photography", relation=TopicRelation.SHARED)
HELP = IntroTopic(
    topic="social media compliance",
    relation=TopicRelation.SEEKS_OFFERS,
    seeker=ContactRef(source="crm", external_id="ada"),
    offerer=ContactRef(source="crm", external_id="bob"),
)
renderer = MessageRenderer()


def test_each_recipient_reads_about_the_other_person_and_the_topic() -> None:
    intro = _intro(ada, bob, topics=[KITES])
    to_ada = renderer.render(INTRO, intro, [0], LINKS)
    assert to_ada.subject == "Meet Bob <script>alert(1)</script>: kite aerial photography"
    assert "Hi Ada Lovelace," in to_ada.text
    assert "You both care about kite aerial photography." in to_ada.text
    assert "bob@example.org" in to_ada.text
    assert "unsub-token" in to_ada.text
    to_bob = renderer.render(INTRO, intro, [1], LINKS)
    assert "Ada Lovelace (Analytical): ada@example.org" in to_bob.text


def test_the_ask_names_nobody_and_carries_both_links() -> None:
    ask = renderer.render(ASK, _intro(ada, bob, topics=[KITES]), [0], LINKS)
    assert (
        ask.subject == "Someone who also cares about kite aerial photography would like to meet you"
    )
    assert "Bob" not in ask.text and "Bob" not in ask.html and "Bob" not in ask.chat[Style.SLACK]
    assert "accept-token" in ask.text and "decline-token" in ask.text
    assert (
        "<https://roac.example.org/links/accept-token|Yes, introduce me>" in ask.chat[Style.SLACK]
    )
    assert (
        "[Yes, introduce me](https://roac.example.org/links/accept-token)"
        in ask.chat[Style.MARKDOWN]
    )


def test_asks_speak_to_seekers_and_helpers_differently() -> None:
    intro = _intro(ada, bob, topics=[HELP])
    assert (
        "Someone who can help with social media compliance"
        in renderer.render(ASK, intro, [0], LINKS).text
    )
    assert "Someone is looking for help with social media compliance, which you offer" in (
        renderer.render(ASK, intro, [1], LINKS).text
    )


def test_every_style_escapes_what_people_typed() -> None:
    rendered = renderer.render(INTRO, _intro(ada, bob, topics=[KITES]), [0], LINKS)
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "<script>" not in rendered.chat[Style.SLACK]
    assert "&lt;script&gt;" in rendered.chat[Style.SLACK]
    assert "\\(1\\)" in rendered.chat[Style.MARKDOWN]  # markdown characters neutralised


def test_non_ascii_names_and_subjects_are_encoded() -> None:
    zoe = _person("zoe", "Zoë Ångström")
    rendered = renderer.render(INTRO, _intro(ada, zoe, topics=[KITES]), [0], LINKS)
    email = build_email(
        rendered,
        from_header="roac <intro@roac.example.org>",
        to_name="Zoë Ångström",
        to_address="zoe@example.org",
        delivery_id=uuid4(),
        proposal_id=uuid4(),
        unsubscribe_url="",
    )
    assert email.data.isascii()
    message = message_from_bytes(email.data, policy=policy.default)
    assert message["To"] == "Zoë Ångström <zoe@example.org>"
    assert message["Subject"] == "Meet Zoë Ångström: kite aerial photography"


def test_markdown_chats_cannot_mention_everyone() -> None:
    eve = _person("eve", "@everyone look")
    chat = renderer.render(INTRO, _intro(ada, eve, topics=[KITES]), [0], LINKS).chat[Style.MARKDOWN]
    assert "@everyone" not in chat


def test_markdown_neuters_mattermost_channel_wide_and_user_mentions() -> None:
    mallory = _person("m", "@channel @all @here @ada (ada@example.org)")
    intro = _intro(ada, mallory, topics=[KITES])
    chat = renderer.render(INTRO, intro, [0], LINKS).chat[Style.MARKDOWN]
    for mention in ("@channel", "@all", "@here", "@ada"):
        assert mention not in chat and f"@\u200b{mention[1:]}" in chat
    assert "ada@example.org" in chat  # an address is not a mention: left as it is
    assert escape(Style.MARKDOWN, "x-@here *b*") == "x\\-@\u200bhere \\*b\\*"
    # Teams card titles go through the same escaping (services/notifier/channels/http.py).
    assert escape(Style.MARKDOWN, "Meet [Bo](https://evil.example)") == (
        "Meet \\[Bo\\]\\(https://evil.example\\)"
    )
    assert escape(Style.SLACK, "<!channel> & co") == "&lt;!channel&gt; &amp; co"


def test_seek_and_offer_are_told_from_each_side() -> None:
    intro = _intro(ada, bob, topics=[HELP])
    assert "You are looking for help with social media compliance, and Bob" in (
        renderer.render(INTRO, intro, [0], LINKS).text
    )
    assert "Ada Lovelace is looking for help with social media compliance, which you offer." in (
        renderer.render(INTRO, intro, [1], LINKS).text
    )


def test_a_group_chat_introduces_everyone_to_everyone() -> None:
    cyd = _person("cyd", "Cyd Charisse")
    chat = renderer.render(INTRO, _intro(ada, bob, cyd, topics=[KITES]), [0, 1, 2], LINKS).chat[
        Style.PLAIN
    ]
    assert chat.startswith(
        "Meet each other: Ada Lovelace, Bob <script>alert(1)</script> and Cyd Charisse!"
    )


def test_operators_can_override_templates_per_language(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "intro.subject.j2").write_text("Custom {{ others[0].name }}")
    rendered = MessageRenderer(override_dir=tmp_path).render(
        INTRO, _intro(ada, bob, topics=[KITES]), [0], LINKS
    )
    assert rendered.subject == "Custom Bob <script>alert(1)</script>"
    assert "Hi Ada" in rendered.text  # files not overridden are the shipped ones


def test_an_unshipped_language_falls_back_to_english() -> None:
    rendered = MessageRenderer(language="fr").render(
        INTRO, _intro(ada, bob, topics=[KITES]), [0], LINKS
    )
    assert "Hi Ada" in rendered.text


def test_the_email_has_a_stable_message_id_both_parts_and_one_click_unsubscribe() -> None:
    delivery, proposal = uuid4(), uuid4()
    rendered = renderer.render(INTRO, _intro(ada, bob, topics=[KITES]), [0], LINKS)
    email = build_email(
        rendered,
        from_header="roac <intro@roac.example.org>",
        to_name="Ada Lovelace",
        to_address="ada@example.org",
        delivery_id=delivery,
        proposal_id=proposal,
        unsubscribe_url=LINKS.unsubscribe,
    )
    message = message_from_bytes(email.data, policy=policy.default)
    assert email.message_id == message["Message-ID"] == f"<{delivery}@roac.example.org>"
    assert (email.sender, email.recipient) == ("intro@roac.example.org", "ada@example.org")
    assert message["To"] == "Ada Lovelace <ada@example.org>"
    assert message["List-Unsubscribe"] == "<https://roac.example.org/links/unsub-token>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert {part.get_content_type() for part in message.iter_parts()} == {"text/plain", "text/html"}
    assert "Bob <script>" in message["Subject"]
    assert sender_domain("no address") == "roac.invalid"


def test_chat_sentences_and_the_list_of_people_each_start_a_line() -> None:
    """Was `...which you offer.• Kate Nasser`: each sentence on its own line, the people after
    a blank line, in every chat style."""
    intro = _intro(ada, bob, topics=[KITES, HELP])
    for style, chat in renderer.render(INTRO, intro, [0], LINKS).chat.items():
        lines = chat.splitlines()
        assert lines[1].startswith("You both care about kite aerial photography."), style
        assert lines[2].startswith("You are looking for help with social media compliance"), style
        assert lines[3] == "", style
        assert lines[4].startswith("• Bob"), style
    group = _intro(ada, bob, _person("cyd", "Cyd"), topics=[KITES])
    chat = renderer.render(INTRO, group, [0, 1, 2], LINKS).chat[Style.PLAIN]
    assert "photography.\n\n• Ada Lovelace (Analytical): ada@example.org\n• Bob" in chat
    assert chat.endswith("cyd@example.org\n\nSay hello when you have a moment.")


def _speaking(person: Participant, language: str | None) -> Participant:
    return person.model_copy(update={"language": language})


def test_a_german_speaker_gets_german_asks_introductions_and_resources() -> None:
    ada_de = _speaking(ada, "de-AT")
    ask = renderer.render(ASK, _intro(ada_de, bob, topics=[KITES]), [0], LINKS)
    assert ask.subject.startswith("Jemand, dem kite aerial photography ebenfalls")
    assert "Hallo Ada Lovelace," in ask.text and "Ja, stellt uns vor" in ask.text
    assert 'lang="de"' in ask.html
    intro = renderer.render(
        INTRO, _intro(ada_de, bob, _person("cyd", "Cyd"), topics=[KITES]), [0], LINKS
    )
    assert "ich möchte Ihnen Bob <script>alert(1)</script> und Cyd vorstellen." in intro.text
    # Bob's message in the same introduction stays English.
    to_bob = renderer.render(INTRO, _intro(ada_de, bob, topics=[KITES]), [1], LINKS)
    assert "Hi Bob" in to_bob.text


def test_a_language_without_templates_falls_back_to_the_default_then_english() -> None:
    ask = renderer.render(ASK, _intro(_speaking(ada, "fr"), bob, topics=[KITES]), [0], LINKS)
    assert ask.text.startswith("Hi Ada Lovelace,")
    german_default = MessageRenderer(language="de")
    assert german_default.render(ASK, _intro(ada, bob, topics=[KITES]), [0], LINKS).text.startswith(
        "Hallo"
    )
    english = german_default.render(
        ASK, _intro(_speaking(ada, "en"), bob, topics=[KITES]), [0], LINKS
    )
    assert english.text.startswith("Hi Ada")


def test_language_tags_are_checked() -> None:
    with pytest.raises(ValidationError, match="language"):
        Participant.model_validate({**ada.model_dump(), "language": "not a language"})


# --- every language has what English has ------------------------------------------------------

TEMPLATES = Path(__file__).resolve().parents[2] / "services" / "notifier" / "templates"
# What a language may leave out, and why: the matcher writes a resource's `reason` in English
# ("Because you care about ..."), so other languages say the person's topics instead.
MAY_OMIT = {"reason"}


def _keys(path: Path) -> set[str]:
    """What a template needs and offers: the variables it reads (`recipient`), the links it
    prints (`links.preferences`), and the keys of its words (`texts[confirm_met]`, a page's)."""
    tree = Environment(autoescape=True).parse(path.read_text())
    read = meta.find_undeclared_variables(tree) - MAY_OMIT
    attributes = {
        f"{n.node.name}.{n.attr}"
        for n in tree.find_all(jinja_nodes.Getattr)
        if isinstance(n.node, jinja_nodes.Name)
    }
    words = {
        f"{a.target.name}[{item.key.value}]"
        for a in tree.find_all(jinja_nodes.Assign)
        if isinstance(a.target, jinja_nodes.Name) and isinstance(a.node, jinja_nodes.Dict)
        for item in a.node.items
        if isinstance(item.key, jinja_nodes.Const)
    }
    return read | attributes | words


def _languages() -> list[str]:
    return sorted(p.name for p in TEMPLATES.iterdir() if p.is_dir() and p.name != "en")


def test_german_is_shipped_and_checked() -> None:
    assert "de" in _languages()


@pytest.mark.parametrize("language", _languages())
def test_each_language_has_every_template_and_key_english_has(language: str) -> None:
    """Messages and the pages people land on (`page.html.j2`, `checkin.page.html.j2`): a
    template English has and a language lacks, or a key (a link, a page's words) it lacks,
    fails here. Shared layouts (`_*.html.j2`) are English only: they hold no words."""
    missing: dict[str, set[str]] = {}
    for english in sorted((TEMPLATES / "en").glob("*.j2")):
        if english.name.startswith("_") and english.name.endswith(".html.j2"):
            continue
        other = TEMPLATES / language / english.name
        if not other.exists():
            missing[english.name] = {"(the whole template)"}
        elif lacking := _keys(english) - _keys(other):
            missing[english.name] = lacking
    assert missing == {}


def test_the_key_check_sees_a_missing_page_key_and_a_missing_link(tmp_path: Path) -> None:
    page = tmp_path / "page.html.j2"
    page.write_text('{% set texts = {"expired": ["x", "y", ""]} %}{{ texts[key][0] }}')
    english = TEMPLATES / "en" / "page.html.j2"
    assert "texts[confirm_accept]" in _keys(english) - _keys(page)
    footer = tmp_path / "checkin.txt.j2"
    footer.write_text("{{ links.met }} {{ links.unsubscribe }}")
    assert "links.preferences" in _keys(TEMPLATES / "en" / "checkin.txt.j2") - _keys(footer)


# --- the pages people land on, in their language ------------------------------------------------


def test_a_page_is_in_the_persons_language_then_the_browsers_then_english() -> None:
    assert link_pages.choose(["de-AT", None], None) == "de"
    assert link_pages.choose([None, "de"], "en-GB") == "de"  # theirs before the browser's
    assert link_pages.choose([None, None], "fr-CH, de;q=0.8, en;q=0.5") == "de"
    assert link_pages.choose(["fr"], None) == "en"  # no French templates: English
    assert link_pages.choose(["fr"], "de;q=0") == "en"
    assert link_pages.choose([], "*") == "en"
    assert link_pages.accepted_languages("en;q=0.2, de, fr;q=0.9") == ["de", "fr", "en"]


@pytest.mark.parametrize(
    ("language", "title", "button"),
    [
        ("de", "Sie haben sich getroffen?", "Ja, wir haben uns getroffen"),
        ("en", "You met?", "Yes, we met"),
        ("fr", "You met?", "Yes, we met"),
    ],
)
def test_the_check_in_page_in_each_language(language: str, title: str, button: str) -> None:
    html = link_pages.render("checkin.page.html.j2", language, "confirm_met", action="/links/t")
    expected_lang = "en" if language == "fr" else language
    assert f'<html lang="{expected_lang}">' in html
    assert f'<h1 style="font-size: 1.4em;">{title}</h1>' in html and button in html
    assert '<form method="post" action="/links/t">' in html
    rating = link_pages.render("checkin.page.html.j2", language, "noted_met", rate_action="/r")
    assert rating.count('name="rating"') == 5 and 'action="/r"' in rating
    assert ("Bewertung senden" in rating) is (language == "de")


def test_the_link_page_in_german_and_english() -> None:
    german = link_pages.render("page.html.j2", "de", "confirm_accept", action="/links/t")
    assert "Jemanden kennenlernen?" in german and "Ja, stellt uns vor" in german
    english = link_pages.render("page.html.j2", "en", "expired")
    assert "This link has expired" in english and "<form" not in english
