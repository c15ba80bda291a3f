"""The fast path for plain addresses never accepts what EmailStr refuses, and normalises alike."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import EmailStr, TypeAdapter, ValidationError

from shared.email_address import check_email, plain_address
from shared.events import ContactData

EMAIL_STR: TypeAdapter[str] = TypeAdapter(EmailStr)

# Characters that matter to the grammar, plus a few that never belong in a plain address.
_ALPHABET = "aZ09.-_+@!#'`~x" + 'é "[]()<>,;:\\'
_LABELS = st.sampled_from(["example", "org", "com", "x", "local", "test", "123", "a-b", "-a", "ok"])


def _email_str(value: str) -> str | None:
    try:
        return EMAIL_STR.validate_python(value)
    except ValidationError:
        return None


@settings(max_examples=3000, derandomize=True)
@given(st.text(alphabet=_ALPHABET, min_size=1, max_size=40))
def test_anything_the_fast_path_accepts_email_str_accepts_the_same(value: str) -> None:
    fast = plain_address(value)
    if fast is not None:
        assert _email_str(value) == fast


@settings(max_examples=3000, derandomize=True)
@given(
    st.text(alphabet="aZ09.-_+!#'`~", min_size=1, max_size=70),
    st.lists(_LABELS, min_size=1, max_size=4),
)
def test_address_shaped_values_agree_with_email_str(local: str, labels: list[str]) -> None:
    value = f"{local}@{'.'.join(labels)}"
    fast = plain_address(value)
    if fast is not None:
        assert _email_str(value) == fast
    assert _outcome(check_email, value) == _outcome(EMAIL_STR.validate_python, value)


def _outcome(check: object, value: str) -> str:
    try:
        return str(check(value))  # type: ignore[operator]
    except (ValueError, ValidationError):
        return "refused"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Ada.Quinn@Example.ORG", "Ada.Quinn@example.org"),
        ("a+tag@mail.example.co.uk", "a+tag@mail.example.co.uk"),
        ("a..b@example.org", None),
        (".a@example.org", None),
        ("a@localhost", None),
        ("a@x.test", None),
        ("a@x.123", None),
        ("a@-x.org", None),
        ("Ada <ada@example.org>", None),  # EmailStr takes this form; the fast path leaves it
    ],
)
def test_known_cases(value: str, expected: str | None) -> None:
    assert plain_address(value) == expected


def test_contacts_normalise_and_refuse_as_before() -> None:
    contact = ContactData(source="crm", external_id="1", name="A", email="A@Example.org")
    assert contact.email == "A@example.org"
    with pytest.raises(ValidationError, match="value is not a valid email address"):
        ContactData(source="crm", external_id="1", name="A", email="a..b@example.org")
    assert ContactData.model_json_schema()["properties"]["email"]["anyOf"][0] == {
        "type": "string",
        "format": "email",
    }
