"""Rendering an introduction for one recipient: subject, plain text and HTML, from Jinja2 templates.

HTML templates autoescape every value (names and topics come from integrations); the subject is
flattened to one line. Templates live in `templates/<language>/`; English ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    select_autoescape,
)

from shared.events import ChannelType, IntroData, Participant, TopicRelation


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class OtherPerson:
    name: str
    organization: str | None
    email: str | None


@dataclass(frozen=True)
class HelpTopic:
    topic: str
    who: str  # the other person's name


def email_address(participant: Participant) -> str | None:
    for channel in participant.channels:
        if channel.type is ChannelType.EMAIL:
            return str(channel.address)
    return None


def join_words(words: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _same(a: object, source: str, external_id: str) -> bool:
    return getattr(a, "source", None) == source and getattr(a, "external_id", None) == external_id


class IntroRenderer:
    def __init__(self, override_dir: Path | None = None, language: str = "en") -> None:
        loaders: list[BaseLoader] = [PackageLoader("services.notifier", f"templates/{language}")]
        if override_dir is not None:
            loaders.insert(0, FileSystemLoader(str(override_dir)))
        self._env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render_intro(self, intro: IntroData, recipient: Participant) -> RenderedMessage:
        others = [
            p for p in intro.participants if not _same(p, recipient.source, recipient.external_id)
        ]
        names = {(p.source, p.external_id): p.name for p in intro.participants}
        shared: list[str] = []
        you_seek: list[HelpTopic] = []
        you_offer: list[HelpTopic] = []
        for topic in intro.topics:
            if topic.relation is TopicRelation.SHARED:
                shared.append(topic.topic)
            elif topic.seeker and topic.offerer:
                if _same(topic.seeker, recipient.source, recipient.external_id):
                    you_seek.append(
                        HelpTopic(
                            topic.topic,
                            names.get((topic.offerer.source, topic.offerer.external_id), ""),
                        )
                    )
                elif _same(topic.offerer, recipient.source, recipient.external_id):
                    you_offer.append(
                        HelpTopic(
                            topic.topic,
                            names.get((topic.seeker.source, topic.seeker.external_id), ""),
                        )
                    )
        context = {
            "recipient": recipient,
            "others": [OtherPerson(p.name, p.organization, email_address(p)) for p in others],
            # Joined here, not in a shared macro: a macro from a non-HTML template called by an
            # HTML one would be marked safe and escape nothing.
            "others_names": join_words([p.name for p in others]),
            "shared_topics": shared,
            "shared_topics_text": join_words(shared),
            "you_seek": you_seek,
            "you_offer": you_offer,
            "reason": intro.reason,
        }
        subject = self._env.get_template("intro.subject.j2").render(context)
        return RenderedMessage(
            subject=" ".join(subject.split()),
            text=self._env.get_template("intro.txt.j2").render(context),
            html=self._env.get_template("intro.html.j2").render(context),
        )
