"""Resources in the notifier as plain Python: rendering in every style, planning, dispatch."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from services.notifier.planning import QuietHours, plan_resource
from services.notifier.rendering import Links, MessageRenderer, Style, Trusted, link_target
from services.notifier.subscriptions import by_type
from shared.events import (
    ChannelAddress,
    ChannelType,
    DeliveryKind,
    EventBatch,
    IntroData,
    IntroProposed,
    IntroTopic,
    Participant,
    ResourceData,
    ResourceProposed,
    TopicRelation,
)

LINKS = Links(accept=None, decline=None, unsubscribe=Trusted("https://roac.example.org/links/u"))
ADA = Participant(
    source="crm",
    external_id="ada",
    name="Ada <Quinn> @everyone",
    timezone="Europe/Berlin",
    channels=[ChannelAddress(type=ChannelType.MATTERMOST, address="https://mm.example.org/h")],
)


def _resource(
    title: str = "Kites *bold* & <script>alert(1)</script>",
    url: str = "https://example.org/a_b/(kites)?x=1&y=2|3",
    recipient: Participant = ADA,
) -> ResourceData:
    return ResourceData(
        proposal_id=UUID(int=1),
        resource_id=UUID(int=2),
        url=url,
        title=title,
        recipient=recipient,
        topics=["kite aerial photography", "sailing"],
        reason="You care about <kites>",
    )


def test_a_resource_names_its_title_url_reason_and_topics_in_every_part() -> None:
    rendered = MessageRenderer().render_resource(_resource(), LINKS)
    assert rendered.subject == (
        "For you, on kite aerial photography: Kites *bold* & <script>alert(1)</script>"
    )
    for part in (rendered.text, rendered.chat[Style.PLAIN]):
        assert "Kites *bold* & <script>alert(1)</script>" in part
        assert "https://example.org/a_b/" in part
        assert "You care about <kites>" in part and "kite aerial photography and sailing" in part
        assert "https://roac.example.org/links/u" in part
    assert "Hi Ada <Quinn> @everyone," in rendered.text


def test_the_html_part_escapes_everything_given() -> None:
    html = MessageRenderer().render_resource(_resource(), LINKS).html
    assert "<script>" not in html and "<Quinn>" not in html and "<kites>" not in html
    assert "Kites *bold* &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="https://example.org/a_b/(kites)?x=1&amp;y=2|3"' in html
    assert "You care about &lt;kites&gt;" in html
    assert '<a href="https://roac.example.org/links/u">' in html


def test_chat_styles_escape_their_markup_and_keep_the_link_whole() -> None:
    chat = MessageRenderer().render_resource(_resource(), LINKS).chat
    slack = chat[Style.SLACK]
    assert (
        "<https://example.org/a_b/%28kites%29?x=1&amp;y=2%7C3|"
        "Kites *bold* &amp; &lt;script&gt;alert(1)&lt;/script&gt;>"
    ) in slack
    assert "Ada &lt;Quinn&gt;" in slack and "<https://roac.example.org/links/u|" in slack
    markdown = chat[Style.MARKDOWN]
    assert (
        "[Kites \\*bold\\* & <script\\>alert\\(1\\)</script\\>]"
        "(https://example.org/a_b/%28kites%29?x=1&y=2%7C3)"
    ) in markdown
    assert "@\u200beveryone" in markdown and "@everyone" not in markdown


def test_a_link_target_loses_what_could_break_out_of_it() -> None:
    assert link_target("https://example.org/a b>c)d]e") == "https://example.org/a%20b%3Ec%29d]e"
    assert link_target("https://example.org/\u2028x") == "https://example.org/%E2%80%A8x"
    assert link_target("https://example.org/caf\u00e9?q=%20") == (
        "https://example.org/caf\u00e9?q=%20"
    )


def test_operator_templates_override_the_resource_ones(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "resource.subject.j2").write_text("Read this: {{ title }}")
    (tmp_path / "resource.html.j2").write_text("<p>{{ title }}</p>")
    rendered = MessageRenderer(tmp_path).render_resource(_resource(), LINKS)
    assert rendered.subject == "Read this: Kites *bold* & <script>alert(1)</script>"
    assert rendered.html == "<p>Kites *bold* &amp; &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert "This may interest you" in rendered.text  # the shipped one for the rest


def test_a_resource_is_one_delivery_on_the_first_channel_after_quiet_hours() -> None:
    quiet = QuietHours(enabled=True, start=21, end=8, fallback_timezone="UTC")
    late = datetime(2026, 1, 15, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    planned = plan_resource(_resource(), late, quiet)
    assert planned == plan_resource(_resource(), late, quiet)  # the same id every time
    assert planned.kind is DeliveryKind.RESOURCE and planned.positions == (0,)
    assert (planned.recipient_source, planned.recipient_external_id) == ("crm", "ada")
    assert planned.channel is ChannelType.MATTERMOST
    assert planned.not_before == datetime(2026, 1, 16, 7, 0, tzinfo=UTC)  # 08:00 in Berlin
    nowhere = ADA.model_copy(update={"channels": []})
    assert plan_resource(_resource(recipient=nowhere), late, quiet).channel is ChannelType.EMAIL


async def test_proposals_are_dispatched_by_type_and_an_unknown_type_is_refused() -> None:
    seen: list[str] = []

    async def intros(batch: EventBatch) -> None:
        seen.append("intro:" + batch.type)

    async def resources(batch: EventBatch) -> None:
        seen.append("resource:" + batch.type)

    apply = by_type({"intro.proposed.v1": intros, "resource.proposed.v1": resources})
    resource = ResourceProposed(source="matcher", correlation_id="c", data=_resource())
    intro = IntroProposed(
        source="matcher",
        correlation_id="c",
        data=IntroData(
            proposal_id=uuid4(),
            participants=[ADA, ADA.model_copy(update={"external_id": "bo"})],
            topics=[IntroTopic(topic="kites", relation=TopicRelation.SHARED)],
            score=1.0,
            reason="r",
        ),
    )
    await apply(EventBatch(events=[resource]))
    await apply(EventBatch(events=[intro]))
    assert seen == ["resource:resource.proposed.v1", "intro:intro.proposed.v1"]
    only_intros = by_type({"intro.proposed.v1": intros})
    with pytest.raises(ValueError, match=r"does not handle resource\.proposed\.v1"):
        await only_intros(EventBatch(events=[resource]))
