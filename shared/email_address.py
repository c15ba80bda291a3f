"""Email addresses, validated as pydantic's EmailStr validates them, fast for the common case.

EmailStr runs email-validator on every address: about 30 us each, a quarter of the matcher's
time while a million people are imported (each address is checked by `roac import`, by ingest
and again by every consumer). A plain ASCII address (a dot-atom local part, a domain of
letters, digits and hyphens) is checked here with one regular expression and the same rules;
anything else (Unicode, quoted local parts, IP literals, whatever the expression does not take)
goes to EmailStr itself, so no address is accepted that EmailStr would refuse, and the value is
normalised the same way (the domain lower-cased). `tests/unit/test_email_address.py` holds the
two side by side.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import AfterValidator, WithJsonSchema
from pydantic.networks import validate_email

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# The last label (top-level domain) must hold a letter: all-digit ones are refused.
_TLD = r"(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+{_TLD})")
# Each is one label, so a domain is special-use when its last label is one of them.
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)
assert all("." not in name for name in _SPECIAL_USE)


def plain_address(value: str) -> str | None:
    """The normalised address if it is a plain ASCII one that email-validator accepts; None
    when the fast path cannot tell (the caller asks email-validator)."""
    found = _PLAIN.fullmatch(value)
    if found is None or len(value) > 254:
        return None
    local, domain = found.group(1), found.group(2).lower()
    if len(local) > 64 or len(domain) > 253:
        return None
    if domain.rpartition(".")[2] in _SPECIAL_USE:
        return None
    return f"{local}@{domain}"


# A contact names its address twice (`email` and an email channel), and ingest, the matcher
# and the notifier each validate it again: the cache makes the repeats free.
@lru_cache(maxsize=4096)
def check_email(value: str) -> str:
    """What EmailStr returns for the value, or the error it raises (the same error type and
    message: EmailStr's own function says it)."""
    return plain_address(value) or validate_email(value)[1]


EmailAddress = Annotated[
    str,
    AfterValidator(check_email),
    WithJsonSchema({"type": "string", "format": "email"}),
]
