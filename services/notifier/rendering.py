"""Rendering what one person (or a group chat) receives: plain Python and Jinja2, no I/O.

Every value a template prints is escaped for where it goes: HTML for the email's HTML part,
Slack's `&<>` entities for Slack, Markdown for Mattermost, Discord and Teams, nothing for plain
text and Matrix. Links roac built itself are marked `Trusted` and left alone; any other URL
a chat template makes a link of (a resource's) has the characters that could end or break the
link's markup percent-encoded. Templates live in `templates/<language>/`; files in
ROAC_TEMPLATE_DIR (or its `<language>/` folder) override them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
)
from markupsafe import Markup

from shared.events import (
    ChannelType,
    DeliveryKind,
    IntroData,
    Participant,
    ResourceData,
    TopicRelation,
)


class Style(StrEnum):
    HTML = "html"
    PLAIN = "plain"
    SLACK = "slack"
    MARKDOWN = "markdown"


CHAT_STYLE = {
    ChannelType.SLACK: Style.SLACK,
    ChannelType.SLACK_WEBHOOK: Style.SLACK,
    ChannelType.MATTERMOST: Style.MARKDOWN,
    ChannelType.DISCORD: Style.MARKDOWN,
    ChannelType.TEAMS: Style.MARKDOWN,
    ChannelType.MATRIX: Style.PLAIN,
    ChannelType.WEBHOOK: Style.PLAIN,
    ChannelType.EMAIL: Style.PLAIN,
}


class Trusted(str):
    """Text roac produced (its own links): printed as is in every style."""

    __slots__ = ()


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_~|>#\[\]()!-])")


def _slack(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# An `@` that starts a word: a mention in Mattermost (`@channel`, `@all`, `@here`, `@someone`)
# and Discord (`@everyone`, `@here`); after a backslash escape too. An `@` inside a word (an
# email address) is left alone.
_MENTION = re.compile(r"(?<!\w)@(?=[\w\\])")


def _markdown(text: str) -> str:
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    # No mentions, whatever a name says: a zero-width space after the `@` keeps it readable but
    # pings nobody (no @channel, @all, @here or @everyone reaching a whole channel).
    return _MENTION.sub("@\u200b", escaped)


_LINKS: dict[Style, Callable[[str, str], str]] = {
    Style.PLAIN: lambda url, label: f"{label}: {url}",
    Style.SLACK: lambda url, label: f"<{url}|{_slack(label)}>",
    Style.MARKDOWN: lambda url, label: f"[{_markdown(label)}]({url})",
}

_ESCAPERS: dict[Style, Callable[[str], str]] = {
    Style.PLAIN: lambda text: text,
    Style.SLACK: _slack,
    Style.MARKDOWN: _markdown,
}


def escape(style: Style, text: str) -> str:
    """`text` escaped for a chat style, as templates escape the values they print (used for
    what a channel adds outside the templates, e.g. a Teams card's title)."""
    return _ESCAPERS[style](text)


# What could end a link or break out of it in some chat's markup (`<url|label>`, `[label](url)`,
# autolinked text): whitespace, control characters, brackets of every kind but [] (IPv6 hosts),
# quotes, the backslash and the backtick.
_UNSAFE_IN_URL = re.compile(r'[\s\x00-\x1f\x7f<>|()"\\`{}^]')


def link_target(url: str) -> str:
    """A URL roac did not build, made safe as a chat link's target: the characters above
    percent-encoded (as UTF-8), everything else as given; `&` is left to the style's escaping."""
    return _UNSAFE_IN_URL.sub(lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), url)


def _link_global(style: Style) -> Callable[[str, str], Trusted]:
    make = _LINKS[style]
    escape_target = _slack if style is Style.SLACK else (lambda text: text)

    def link(url: str, label: str) -> Trusted:
        if not isinstance(url, Trusted):
            url = escape_target(link_target(url))
        return Trusted(make(url, label))

    return link


def _finalizer(escape: Callable[[str], str]) -> Callable[[Any], Any]:
    def finalize(value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, Trusted | Markup):
            return escape(value)
        return value

    return finalize


@dataclass(frozen=True)
class Links:
    accept: Trusted | None
    decline: Trusted | None
    unsubscribe: Trusted
    preferences: Trusted | None = None  # the person's preferences page (none in a group)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str  # email plain-text part
    html: str  # email HTML part
    chat: dict[Style, str]  # the chat message in each escaping style


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
            return channel.address
    return None


# The word that joins the last two of a list, per shipped language ("a, b and c").
_AND = {"en": "and", "de": "und"}


def join_words(words: Sequence[str], language: str = "en") -> str:
    """ "a", "a and b", "a, b and c" (in German "a, b und c")."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + f" {_AND.get(language, 'and')} " + words[-1]


def base_language(tag: str | None) -> str | None:
    """`de` for `de`, `de-AT` or `DE_at`; None for nothing usable."""
    if not tag:
        return None
    base = tag.replace("_", "-").split("-", 1)[0].strip().lower()
    return base if base.isalpha() and 2 <= len(base) <= 3 else None


def _same(a: object, source: str, external_id: str) -> bool:
    return getattr(a, "source", None) == source and getattr(a, "external_id", None) == external_id


class MessageRenderer:
    """Renders in the recipient's own language (a participant's `language`) when roac ships
    templates for it or the operator's ROAC_TEMPLATE_DIR has them, else in the deployment's
    default language (ROAC_DEFAULT_LANGUAGE), and English completes any language for the
    templates it lacks. A group chat is written in the default language."""

    def __init__(self, override_dir: Path | None = None, language: str = "en") -> None:
        self._override_dir = override_dir
        self._default = base_language(language) or "en"
        self._templates: dict[str, _Templates] = {}
        self._for(self._default)  # a broken template directory fails at start, not at send

    def _for(self, language: str) -> _Templates:
        found = self._templates.get(language)
        if found is None:
            found = self._templates[language] = _Templates(
                self._override_dir, language, default=language == self._default
            )
        return found

    def language_of(self, recipient: Participant | None) -> str:
        """The language a message to `recipient` is written in."""
        wanted = base_language(getattr(recipient, "language", None))
        if wanted is None or wanted == self._default:
            return self._default
        if wanted == "en" or ships(wanted) or self._overrides(wanted):
            return wanted
        return self._default

    def _overrides(self, language: str) -> bool:
        return self._override_dir is not None and (self._override_dir / language).is_dir()

    def render(
        self,
        kind: DeliveryKind,
        intro: IntroData,
        recipients: Sequence[int],
        links: Links,
    ) -> Rendered:
        """What the participants at `recipients` receive (one person, or a group chat)."""
        recipient = intro.participants[recipients[0]] if len(recipients) == 1 else None
        language = self.language_of(recipient)
        context = _context(kind, intro, recipients, links, language)
        return self._for(language).render(kind.value, context)

    def render_resource(self, resource: ResourceData, links: Links) -> Rendered:
        """What the recipient of a resource receives (`resource.*` templates)."""
        language = self.language_of(resource.recipient)
        topics = list(resource.topics)
        context = {
            "kind": DeliveryKind.RESOURCE.value,
            "group": False,
            "recipient": resource.recipient,
            "title": resource.title,
            "url": resource.url,
            "reason": resource.reason,
            "topic": topics[0],
            "topics": topics,
            "topics_text": join_words(topics, language),
            "links": links,
            "language": language,
        }
        return self._for(language).render(DeliveryKind.RESOURCE.value, context)

    def render_for(self, name: str, language: str, context: dict[str, Any]) -> Rendered:
        """Template set `name` (`checkin.*`) for one person in `language` (`language_of`
        theirs), with `context` (a `recipient` among it)."""
        return self._for(language).render(name, {**context, "group": False, "language": language})


def ships(language: str) -> bool:
    """Whether roac ships templates in `language` (a base language: `de`)."""
    return (resources.files("services.notifier") / "templates").joinpath(language).is_dir()


class _Templates:
    """The Jinja2 environments of one language: HTML, and one per chat style."""

    def __init__(self, override_dir: Path | None, language: str, *, default: bool) -> None:
        loaders: list[BaseLoader] = []
        if override_dir is not None:
            # Templates at the top of ROAC_TEMPLATE_DIR are the default language's.
            folders = [override_dir / language, *([override_dir] if default else [])]
            loaders.append(FileSystemLoader([str(f) for f in folders]))
        if language != "en" and ships(language):
            loaders.append(PackageLoader("services.notifier", f"templates/{language}"))
        # English is shipped and completes any language for the templates it lacks.
        loaders.append(PackageLoader("services.notifier", "templates/en"))
        loader = ChoiceLoader(loaders)
        common: dict[str, Any] = {
            "loader": loader,
            "undefined": StrictUndefined,
            "trim_blocks": True,
            "lstrip_blocks": True,
        }
        self._html = Environment(autoescape=True, **common)
        self._chat: dict[Style, Environment] = {}
        for style, escape in _ESCAPERS.items():
            # Not HTML: `finalize` escapes every printed value for the chat's own syntax.
            env = Environment(autoescape=False, finalize=_finalizer(escape), **common)  # noqa: S701
            env.globals["link"] = _link_global(style)
            self._chat[style] = env

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        plain = self._chat[Style.PLAIN]
        subject = plain.get_template(f"{name}.subject.j2").render(context)
        chat = {
            style: env.get_template(f"{name}.chat.j2").render(context).strip()
            for style, env in self._chat.items()
        }
        if context["group"]:
            # A group only ever gets a chat message (a Slack group DM).
            return Rendered(" ".join(subject.split()), chat[Style.PLAIN], "", chat)
        return Rendered(
            subject=" ".join(subject.split()),
            text=plain.get_template(f"{name}.txt.j2").render(context),
            html=self._html.get_template(f"{name}.html.j2").render(context),
            chat=chat,
        )


def _context(
    kind: DeliveryKind, intro: IntroData, recipients: Sequence[int], links: Links, language: str
) -> dict[str, Any]:
    people = intro.participants
    group = len(recipients) > 1
    recipient = None if group else people[recipients[0]]
    others = people if group else [p for i, p in enumerate(people) if i not in recipients]
    names = {(p.source, p.external_id): p.name for p in people}
    shared: list[str] = []
    you_seek: list[HelpTopic] = []
    you_offer: list[HelpTopic] = []
    help_topics: list[str] = []
    for topic in intro.topics:
        if topic.relation is TopicRelation.SHARED:
            shared.append(topic.topic)
            continue
        help_topics.append(topic.topic)
        if recipient is None or not (topic.seeker and topic.offerer):
            continue
        if _same(topic.seeker, recipient.source, recipient.external_id):
            offerer = (topic.offerer.source, topic.offerer.external_id)
            you_seek.append(HelpTopic(topic.topic, names.get(offerer, "")))
        elif _same(topic.offerer, recipient.source, recipient.external_id):
            seeker = (topic.seeker.source, topic.seeker.external_id)
            you_offer.append(HelpTopic(topic.topic, names.get(seeker, "")))
    return {
        "kind": kind.value,
        "group": group,
        "recipient": recipient,
        "others": [OtherPerson(p.name, p.organization, email_address(p)) for p in others],
        # Joined here, not in a shared macro: a macro from a non-HTML template called by an
        # HTML one would be marked safe and escape nothing.
        "others_names": join_words([p.name for p in others], language),
        "topic": intro.topics[0].topic,
        "shared_topics": shared,
        "shared_topics_text": join_words(shared, language),
        "help_topics_text": join_words(help_topics, language),
        "you_seek": you_seek,
        "you_offer": you_offer,
        "reason": intro.reason,
        "links": links,
        "language": language,
    }
