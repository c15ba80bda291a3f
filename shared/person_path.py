"""A person as an integration knows them, in a URL path: `/v1/contacts/{source}/{external_id}`.

One definition for the three services' routes, with the same rules as `ContactRef`'s fields,
the character rule included (shared/text_safety.py). Why here: the matcher's and the notifier's
copies had lost that rule, so a NUL in the path reached PostgreSQL and came back as a 500, and a
right-to-left override was looked up instead of refused.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import StringConstraints
from starlette.convertors import Convertor, register_url_convertor

from shared.names import SOURCE_PATTERN
from shared.text_safety import SINGLE_LINE


class PersonIdConvertor(Convertor[str]):
    """`{external_id:person_id}`: Starlette's `path` (an id may hold a slash, sent as %2F and
    decoded before routing), but matching a line break too. With `path` (`.*`), an id holding a
    decoded %0A matched no route, a 404 for a path that exists; here it reaches `ExternalIdPath`,
    whose character rule answers a 422 naming the field."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Routes compile their path when declared: every module declaring one imports this module.
register_url_convertor("person_id", PersonIdConvertor())

SourcePath = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=SOURCE_PATTERN, description="Source"),
    SINGLE_LINE,
]
# Trimmed as `ContactRef` trims it, so `/v1/contacts/crm/%2042%20` names person "42" in every
# service (ingest erased "42" while the matcher looked up " 42 "); only spaces: a 422.
ExternalIdPath = Annotated[
    str,
    Path(min_length=1, max_length=256, description="The person's id in that source"),
    StringConstraints(strip_whitespace=True, min_length=1),
    SINGLE_LINE,
]
