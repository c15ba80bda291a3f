"""Which characters inbound text may hold: the one rule every string field of every inbound
schema applies (HTTP bodies of the three services, and the AMQP ingress, which validates the
same schemas).

Why: a NUL character is refused by PostgreSQL only when the matcher applies the event, long
after ingest answered 202 (the event is then parked, and the integration never learns why);
control characters and line breaks in a name or a topic end up in email headers, chat messages
and log lines; bidirectional overrides and isolates (U+202E ...) make a name or a URL display as
something else than what it is ("Trojan Source"). So these are refused at the door, with a
field-level 422 (or a parked ingress message naming the field), never stored.

Refused in every string field:

- C0 control characters U+0000-U+001F and DEL U+007F (but see tab and newlines below),
- C1 control characters U+0080-U+009F,
- bidirectional formatting characters: the embeddings and overrides U+202A-U+202E, the
  isolates U+2066-U+2069 and the marks U+200E, U+200F and U+061C,
- lone surrogates U+D800-U+DFFF (a JSON `"\\ud800"` escape: they cannot be encoded as UTF-8).

Single-line fields (names, ids, topics, emails, URLs, organisations, time zones, tags: every
inbound string field today) also refuse tab, line feed, carriage return and the Unicode line and
paragraph separators U+2028/U+2029. Free-text fields (a description, a note; none is inbound
today) allow tab, line feed and carriage return.

The value is checked as sent, before any trimming: `"Ada\\n"` is refused, not trimmed.

Use: put `SINGLE_LINE` (or `FREE_TEXT`) last in a string type's `Annotated[...]`, after its
`StringConstraints`, e.g. `Annotated[str, StringConstraints(max_length=200), SINGLE_LINE]`. It
wraps the whole type, so it sees the raw value while the constraints keep their own error
messages and JSON schema (a validator placed before them would turn them into generic
"Value should have at most 5 items" checks and drop `pattern` from the schema).

Also here: the correlation id rule (a token matched whole), shared by the services that take
one from a header or an AMQP property.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

# Refused everywhere: C0 except tab, LF and CR; DEL and C1; bidirectional formatting; surrogates.
_ALWAYS_REFUSED = (
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
)
_FREE_TEXT_REFUSED = re.compile(f"[{_ALWAYS_REFUSED}]")
_SINGLE_LINE_REFUSED = re.compile(f"[\t\n\r\u2028\u2029{_ALWAYS_REFUSED}]")

ERROR_TYPE = "unsafe_character"

# The correlation id kept from a caller (X-Correlation-ID, the AMQP correlation_id property):
# one token, matched whole; anything else is replaced, never trimmed or kept in part. Every
# event's envelope holds its correlation id to the same pattern (shared/events.py), so a consumer
# re-checks what a publisher other than ingest put there before it reaches a log line.
# (pydantic's Rust regex: `$` is the end of the text; Python's `re` would let a final "\n" past
# a `$`, hence fullmatch below.)
_CORRELATION_CHARS = r"[A-Za-z0-9._:-]{1,128}"
CORRELATION_ID_PATTERN = f"^{_CORRELATION_CHARS}$"
_CORRELATION_ID = re.compile(_CORRELATION_CHARS)


def first_unsafe(text: str, *, free_text: bool = False) -> int | None:
    """The index of the first character `text` may not hold, or None when it is safe."""
    # Every refused character is unprintable (Cc, Cf, Cs, Zl, Zp): the common case is one call.
    if text.isprintable():
        return None
    found = (_FREE_TEXT_REFUSED if free_text else _SINGLE_LINE_REFUSED).search(text)
    return None if found is None else found.start()


def describe(char: str) -> str:
    """`U+202E (RIGHT-TO-LEFT OVERRIDE)`, `U+0000 (a control character)`: what was refused,
    named without the character itself."""
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        what = "a lone surrogate"
    elif char in "\t\n\r\u2028\u2029":
        what = {"\t": "tab"}.get(char, "a line break")
    else:
        what = unicodedata.name(char, "") or "a control character"
    return f"U+{code:04X} ({what})"


def _refuse(text: str, index: int, *, free_text: bool) -> PydanticCustomError:
    allowed = "" if free_text else "; this field is a single line"
    return PydanticCustomError(
        ERROR_TYPE,
        "must not contain control characters or bidirectional formatting characters"
        "{allowed}: {character} at position {position}",
        {"character": describe(text[index]), "position": index + 1, "allowed": allowed},
    )


def check_single_line(text: str) -> str:
    """`text` unchanged, or a pydantic error (type `unsafe_character`) naming the first
    refused character and its position (from 1), never the value."""
    index = first_unsafe(text)
    if index is not None:
        raise _refuse(text, index, free_text=False)
    return text


def check_free_text(text: str) -> str:
    """As `check_single_line`, but tab, line feed and carriage return are allowed."""
    index = first_unsafe(text, free_text=True)
    if index is not None:
        raise _refuse(text, index, free_text=True)
    return text


class SafeText:
    """The pydantic annotation: checks the raw value (before the type's own trimming and
    constraints), then lets the annotated type validate it. Put it last in `Annotated[...]`.
    A before-validator around the whole type keeps the type's JSON schema as it is."""

    __slots__ = ("free_text",)

    def __init__(self, *, free_text: bool = False) -> None:
        self.free_text = free_text

    def __repr__(self) -> str:
        return "FREE_TEXT" if self.free_text else "SINGLE_LINE"

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        free_text = self.free_text

        def validate(value: Any) -> Any:
            if isinstance(value, str):
                index = first_unsafe(value, free_text=free_text)
                if index is not None:
                    raise _refuse(value, index, free_text=free_text)
            return value  # anything else is the annotated type's to refuse

        return core_schema.no_info_before_validator_function(validate, handler(source))


SINGLE_LINE = SafeText()
FREE_TEXT = SafeText(free_text=True)


def escaped(text: str) -> str:
    """`text` with every refused character (single-line rule) written as `\\uXXXX`: for text
    that must be shown although it came from outside (a field name in an AMQP header)."""
    return _SINGLE_LINE_REFUSED.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def neutralised(text: str) -> str:
    """`text` with every refused character (single-line rule) replaced by U+FFFD: for text
    that was checked when it came in and is read again later (an event another service wrote,
    a row stored before a rule existed), where refusing would lose more than it protects."""
    if text.isprintable():
        return text
    return _SINGLE_LINE_REFUSED.sub("\ufffd", text)


def correlation_token(value: object) -> object:
    """An event's correlation id as consumers keep it: the value when it is one sane token
    (`CORRELATION_ID_PATTERN`), else a token derived from it (the same one every time, so
    related events still share it); never refused, so that an event is not lost over it."""
    if not isinstance(value, str) or _CORRELATION_ID.fullmatch(value):
        return value  # not text: the schema's own error
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"replaced-{digest}"


def kept_correlation_id(value: str | None) -> str | None:
    """The caller's correlation id when the whole value is one sane token (letters, digits,
    `._:-`, at most 128); None otherwise, and the caller mints a fresh one."""
    if value and _CORRELATION_ID.fullmatch(value):
        return value
    return None
