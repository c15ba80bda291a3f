"""The pages people land on from a link in their messages (an ask's, an unsubscribe, a
check-in's), rendered in their own language like the messages themselves.

A page's words live in its template (`page.html.j2`, `checkin.page.html.j2`: a `texts` table
keyed by page, the layout shared in `templates/en/_*.html.j2`), one copy per shipped language,
so adding a language is adding a template directory. Which language a page is in:

1. the language the person chose on their preferences page (the notifier's own record);
2. else the one their introduction carries for them (the language of the message they clicked
   in, `Participant.language`);
3. else the first their browser asks for (Accept-Language);

each counting only when roac has templates for it (shipped, or in the operator's
ROAC_TEMPLATE_DIR), else the deployment's ROAC_DEFAULT_LANGUAGE, else English. The person is
read from the link's own sealed token (services/notifier/links.py), expired or not: a late click
still reads "this link has expired" in their language. A bad token names nobody: the browser's
language.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
)

from services.notifier.links import InvalidLink, LinkKeyring
from services.notifier.rendering import base_language, ships

if TYPE_CHECKING:
    from services.notifier.store.uow import NotifierStore


def page_responses(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the public pages, `{status: description}`: each answer is an HTML
    page in the person's language, so the links' document says every answer a click can get."""
    return {
        status: {"description": text, "content": {"text/html": {"schema": {"type": "string"}}}}
        for status, text in described.items()
    }


DEFAULT = "en"


class PageTemplates:
    """The link pages' templates of one deployment: the shipped ones, with the operator's
    ROAC_TEMPLATE_DIR first (a language added there is a language the pages speak too, as the
    messages do), and ROAC_DEFAULT_LANGUAGE for a person whose language is unknown."""

    def __init__(self, override_dir: Path | None = None, default_language: str = DEFAULT) -> None:
        self._override_dir = override_dir
        self._environments: dict[str, Environment] = {}
        self.default = self.shipped(default_language) or DEFAULT

    def shipped(self, tag: str | None) -> str | None:
        """The language roac has page templates for, for a tag (`de` for `de-AT`), or None."""
        base = base_language(tag)
        if base is None:
            return None
        if base == DEFAULT or ships(base):
            return base
        if self._override_dir is not None and (self._override_dir / base).is_dir():
            return base
        return None

    def choose(self, person: Iterable[str | None], accept_language: str | None) -> str:
        """The page's language: the first of the person's own languages, then of the
        browser's, that roac has; else the deployment's default."""
        for tag in [*person, *accepted_languages(accept_language)]:
            found = self.shipped(tag)
            if found is not None:
                return found
        return self.default

    def render(self, name: str, language: str, key: str, **context: Any) -> str:
        """Page `key` of template `name` in `language` (one it has; anything else: the
        default)."""
        language = self.shipped(language) or self.default
        defaults: dict[str, Any] = {"action": "", "rate_action": None}
        return (
            self._environment(language)
            .get_template(name)
            .render({**defaults, **context, "key": key, "lang": language})
        )

    def _environment(self, language: str) -> Environment:
        found = self._environments.get(language)
        if found is None:
            loaders: list[BaseLoader] = []
            if self._override_dir is not None and (self._override_dir / language).is_dir():
                loaders.append(FileSystemLoader(str(self._override_dir / language)))
            if ships(language):
                loaders.append(PackageLoader("services.notifier", f"templates/{language}"))
            # English completes a language for the templates it lacks (a layout, a new page).
            loaders.append(PackageLoader("services.notifier", f"templates/{DEFAULT}"))
            found = Environment(
                loader=ChoiceLoader(loaders), autoescape=True, undefined=StrictUndefined
            )
            self._environments[language] = found
        return found


# The notifier's one configuration (`configure`, from its app: ROAC_TEMPLATE_DIR and
# ROAC_DEFAULT_LANGUAGE); the pages are rendered by the link routes' free functions.
_pages = PageTemplates()


def configure(templates: PageTemplates) -> None:
    """Use `templates` for every link page (the notifier's app, at start)."""
    global _pages  # one notifier process, one template configuration
    _pages = templates


def shipped(tag: str | None) -> str | None:
    """The language the pages have for a tag (`de` for `de-AT`), or None."""
    return _pages.shipped(tag)


def accepted_languages(header: str | None) -> list[str]:
    """The tags of an Accept-Language header, most wanted first (`q=0` ones dropped)."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate((header or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(weighted)]


def choose(person: Iterable[str | None], accept_language: str | None) -> str:
    """The page's language (`PageTemplates.choose` of the configured templates)."""
    return _pages.choose(person, accept_language)


def render(name: str, language: str, key: str, **context: Any) -> str:
    """Page `key` of template `name` in `language` (`PageTemplates.render`)."""
    return _pages.render(name, language, key, **context)


class PageLanguages:
    """The language of a link's page, from its token's person (see the module's docstring)."""

    def __init__(self, store: NotifierStore, keyring: LinkKeyring) -> None:
        self._store = store
        self._keyring = keyring

    async def of_link(self, token: str, accept_language: str | None) -> str:
        try:
            # As of the token's own time: an expired link names its person all the same.
            claim = self._keyring.verify(token, 0)
        except InvalidLink:
            return choose([], accept_language)
        async with self._store.unit_of_work() as uow:
            chosen = (await uow.preferences.current(claim.source, claim.external_id)).language
            intro = await uow.intros.get(claim.intro_id) if claim.intro_id else None
        told = next(
            (
                p.language
                for p in (intro.intro.participants if intro else [])
                if (p.source, p.external_id) == (claim.source, claim.external_id)
            ),
            None,
        )
        return choose([chosen, told], accept_language)


async def page_language(languages: PageLanguages | None, token: str, accept: str | None) -> str:
    """`languages.of_link`, or the browser's language where no store is wired (a bare app)."""
    if languages is None:
        return choose([], accept)
    return await languages.of_link(token, accept)
