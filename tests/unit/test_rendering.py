from uuid import uuid4

from services.notifier.email_message import build_email, sender_domain
from services.notifier.rendering import IntroRenderer
from shared.events import (
    ChannelAddress,
    ChannelType,
    ContactRef,
    IntroData,
    IntroTopic,
    Participant,
    TopicRelation,
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


def test_each_recipient_reads_about_the_other_person_and_the_topic() -> None:
    intro = _intro(ada, bob, topics=[KITES])
    to_ada = IntroRenderer().render_intro(intro, ada)
    assert to_ada.subject == "Meet Bob <script>alert(1)</script>: kite aerial photography"
    assert "Hi Ada Lovelace," in to_ada.text
    assert "You both care about kite aerial photography." in to_ada.text
    assert "bob@example.org" in to_ada.text
    to_bob = IntroRenderer().render_intro(intro, bob)
    assert "Ada Lovelace (Analytical): ada@example.org" in to_bob.text
    assert "Hi Bob" in to_bob.text and "Ada" not in to_bob.subject.split(":")[1]


def test_html_escapes_every_user_supplied_string() -> None:
    html = IntroRenderer().render_intro(_intro(ada, bob, topics=[KITES]), ada).html
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_seek_and_offer_are_told_from_each_side() -> None:
    help_topic = IntroTopic(
        topic="social media compliance",
        relation=TopicRelation.SEEKS_OFFERS,
        seeker=ContactRef(source="crm", external_id="ada"),
        offerer=ContactRef(source="crm", external_id="bob"),
    )
    intro = _intro(ada, bob, topics=[help_topic])
    renderer = IntroRenderer()
    assert (
        "You are looking for help with social media compliance, and Bob"
        in renderer.render_intro(intro, ada).text
    )
    assert "Ada Lovelace is looking for help with social media compliance, which you offer." in (
        renderer.render_intro(intro, bob).text
    )


def test_groups_name_everyone_else() -> None:
    cyd = _person("cyd", "Cyd Charisse")
    text = IntroRenderer().render_intro(_intro(ada, bob, cyd, topics=[KITES]), ada).text
    assert "introduce you to Bob <script>alert(1)</script> and Cyd Charisse." in text


def test_operators_can_override_templates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "intro.subject.j2").write_text("Custom {{ others[0].name }}")
    rendered = IntroRenderer(override_dir=tmp_path).render_intro(
        _intro(ada, bob, topics=[KITES]), ada
    )
    assert rendered.subject == "Custom Bob <script>alert(1)</script>"


def test_the_email_has_a_stable_message_id_and_both_parts() -> None:
    delivery, proposal = uuid4(), uuid4()
    rendered = IntroRenderer().render_intro(_intro(ada, bob, topics=[KITES]), ada)
    message = build_email(
        rendered,
        from_header="roac <intro@roac.example.org>",
        to_name="Ada Lovelace",
        to_address="ada@example.org",
        delivery_id=delivery,
        proposal_id=proposal,
    )
    assert message["Message-ID"] == f"<{delivery}@roac.example.org>"
    assert message["To"] == "Ada Lovelace <ada@example.org>"
    assert {part.get_content_type() for part in message.iter_parts()} == {"text/plain", "text/html"}
    assert sender_domain("no address") == "roac.invalid"
