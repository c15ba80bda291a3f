"""The inbound text rule (shared/text_safety.py) by itself and on the event types that carry it:
which characters are refused where, what the error says (never the value), that the types keep
their own constraints and JSON schema, and that a correlation id is matched whole."""

from __future__ import annotations

from copy import deepcopy
from typing import Annotated, Any

import pytest
from pydantic import StringConstraints, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from shared.events import ChannelAddress, ContactData, InterestData
from shared.text_safety import (
    ERROR_TYPE,
    FREE_TEXT,
    SINGLE_LINE,
    check_free_text,
    check_single_line,
    describe,
    escaped,
    first_unsafe,
    kept_correlation_id,
)

C0 = [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]
C1 = [chr(c) for c in range(0x7F, 0xA0)]  # DEL and C1
BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)]
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]
ALWAYS_REFUSED = C0 + C1 + BIDI + SURROGATES
LINE_BREAKS = ["\t", "\n", "\r", "\u2028", "\u2029"]
# Text people really write: accents, CJK, right-to-left scripts (without formatting
# characters), an emoji joined with ZWJ, a no-break space, a zero-width non-joiner.
FINE = [
    "Ada Quinn",
    "Zoë Ødegård-Łukasiewicz",
    "東京 コミュニティ",
    "שלום עולם",
    "مرحبا",
    "👩‍💻 engineers",
    "Dr.\u00a0Who",
    "می\u200cخواهم",
    "https://example.org/a?b=c#d",
    "",
]


@pytest.mark.parametrize("char", ALWAYS_REFUSED, ids=lambda c: f"U+{ord(c):04X}")
def test_control_bidi_and_surrogate_characters_are_refused_everywhere(char: str) -> None:
    text = f"ab{char}cd"
    assert first_unsafe(text) == 2
    assert first_unsafe(text, free_text=True) == 2
    with pytest.raises(PydanticCustomError):
        check_single_line(text)
    with pytest.raises(PydanticCustomError):
        check_free_text(text)


@pytest.mark.parametrize("char", LINE_BREAKS, ids=lambda c: f"U+{ord(c):04X}")
def test_tab_and_line_breaks_only_in_free_text(char: str) -> None:
    text = f"line one{char}line two"
    assert first_unsafe(text) == 8
    assert first_unsafe(text, free_text=True) is None


@pytest.mark.parametrize("text", FINE)
def test_ordinary_text_in_any_script_is_accepted(text: str) -> None:
    assert check_single_line(text) == text
    assert check_free_text(text) == text


def test_every_other_code_point_of_the_first_planes_is_accepted() -> None:
    refused = set(ALWAYS_REFUSED) | set(LINE_BREAKS) | {chr(c) for c in range(0xD800, 0xE000)}
    for code in range(0x3000):
        if chr(code) not in refused:
            assert first_unsafe(chr(code)) is None, f"U+{code:04X}"


def test_the_error_names_the_character_and_its_place_never_the_value() -> None:
    adapter: TypeAdapter[str] = TypeAdapter(Annotated[str, SINGLE_LINE])
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python("secret\u202etxt.exe")
    (error,) = caught.value.errors()
    assert error["type"] == ERROR_TYPE
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE) at position 7" in error["msg"]
    assert "single line" in error["msg"]
    assert "secret" not in error["msg"]
    assert describe("\x00") == "U+0000 (a control character)"
    assert describe("\n") == "U+000A (a line break)"
    assert describe("\t") == "U+0009 (tab)"
    assert describe("\ud800") == "U+D800 (a lone surrogate)"


def test_the_free_text_annotation_allows_tab_and_newlines() -> None:
    adapter: TypeAdapter[str] = TypeAdapter(Annotated[str, FREE_TEXT])
    assert adapter.validate_python("one\r\n\ttwo") == "one\r\n\ttwo"
    with pytest.raises(ValidationError, match="U\\+0000"):
        adapter.validate_python("one\x00two")
    with pytest.raises(ValidationError, match="U\\+2028"):
        TypeAdapter(Annotated[str, SINGLE_LINE]).validate_python("one\u2028two")


def test_the_value_is_checked_as_sent_before_trimming() -> None:
    with pytest.raises(ValidationError) as caught:
        ContactData.model_validate({"source": "crm", "external_id": "42", "name": "Ada\n"})
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [(("name",), ERROR_TYPE)]
    # Spaces are still trimmed, as before.
    assert ContactData.model_validate({"source": "crm", "external_id": " 42 ", "name": " Ada "})


def test_the_types_keep_their_own_constraints_messages_and_schema() -> None:
    adapter: TypeAdapter[str] = TypeAdapter(
        Annotated[str, StringConstraints(max_length=3, pattern=r"^[a-z]+$"), SINGLE_LINE]
    )
    assert adapter.json_schema() == {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"}
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python("abcd")
    assert caught.value.errors()[0]["type"] == "string_too_long"
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python(42)
    assert caught.value.errors()[0]["type"] == "string_type"


CONTACT: dict[str, Any] = {
    "source": "crm",
    "external_id": "42",
    "name": "Ada Quinn",
    "email": "ada@example.org",
    "organization": "Northwind",
    "timezone": "Europe/Berlin",
    "channels": [{"type": "webhook", "address": "https://example.org/hook"}],
    "tags": ["berlin"],
    "blocks": [{"source": "crm", "external_id": "43"}],
}
INTEREST: dict[str, Any] = {"source": "crm", "external_id": "42", "topic": "kites"}
# Every string field of the inbound event payloads, by its place in the item.
CONTACT_FIELDS = [
    ("source",),
    ("external_id",),
    ("name",),
    ("email",),
    ("organization",),
    ("timezone",),
    ("channels", 0, "address"),
    ("tags", 0),
    ("blocks", 0, "source"),
    ("blocks", 0, "external_id"),
]
INTEREST_FIELDS = [("source",), ("external_id",), ("topic",)]


def _with(item: dict[str, Any], loc: tuple[str | int, ...], char: str) -> dict[str, Any]:
    """A deep copy of `item` whose string at `loc` has `char` in its middle."""
    copy = deepcopy(item)
    target: Any = copy
    for part in loc[:-1]:
        target = target[part]
    value = target[loc[-1]]
    middle = 1 if "@" not in value else value.index("@")
    target[loc[-1]] = value[:middle] + char + value[middle:]
    return copy


@pytest.mark.parametrize("char", ["\x00", "\u202e", "\x85", "\t"], ids=repr)
@pytest.mark.parametrize(
    ("model", "item", "loc"),
    [(ContactData, CONTACT, loc) for loc in CONTACT_FIELDS]
    + [(InterestData, INTEREST, loc) for loc in INTEREST_FIELDS],
    ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else "",
)
def test_every_inbound_string_field_refuses_them(
    model: type[ContactData] | type[InterestData],
    item: dict[str, Any],
    loc: tuple[str | int, ...],
    char: str,
) -> None:
    model.model_validate(item)  # valid without it
    with pytest.raises(ValidationError) as caught:
        model.model_validate(_with(item, loc, char))
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [(loc, ERROR_TYPE)]


@pytest.mark.parametrize(
    ("kind", "address"),
    [("email", "ada@exa\u202emple.org"), ("slack", "U024\x00BE7LH"), ("matrix", "!a\u2066b:x.org")],
)
def test_every_channel_type_refuses_them(kind: str, address: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChannelAddress.model_validate({"type": kind, "address": address})
    assert caught.value.errors()[0]["type"] == ERROR_TYPE


def test_refused_characters_can_be_shown_escaped() -> None:
    assert escaped("na\u202eme\x00\n") == "na\\u202eme\\u0000\\u000a"
    assert escaped("items[3].kind") == "items[3].kind"


@pytest.mark.parametrize("value", ["abc-123", "req:42.a_b", "x" * 128, "9f0c41d2-0000-4000-8000-1"])
def test_a_sane_correlation_id_is_kept(value: str) -> None:
    assert kept_correlation_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "abc\nevil",
        "abc\n",  # `$` of re.match would have let a trailing newline through
        "good-id junk",
        "good-id\tjunk",
        "good-id\x00",
        "id\u202e",
        "x" * 129,
        "ünïcode",
    ],
    ids=repr,
)
def test_anything_else_is_not_kept_whole_or_in_part(value: str | None) -> None:
    assert kept_correlation_id(value) is None
