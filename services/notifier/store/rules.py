"""The notifier's rules its SQL must enforce (under row locks, in one statement), each built
from the Python rule it mirrors, so neither can drift from the other:

- a delivery not yet sent nor closed: `delivery_lifecycle.UNSENT`;
- an introduction under way: `optin.OPEN_STATES`;
- a person who opted out: a row in `notifier.opt_outs` (written once, here).

Fragments are constants built from code, never from input."""

from __future__ import annotations

from collections.abc import Iterable

from services.notifier.delivery_lifecycle import UNSENT
from services.notifier.optin import OPEN_STATES


def sql_list(values: Iterable[str]) -> str:
    """`('a', 'b')`, for `IN`: only for the constants below."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


UNSENT_SQL = sql_list(UNSENT)
OPEN_STATES_SQL = sql_list(OPEN_STATES)


def opted_out_sql(source: str, external_id: str) -> str:
    """Whether the person in these two columns opted out (an `EXISTS`)."""
    where = f"o.source = {source} AND o.external_id = {external_id}"
    return f"EXISTS (SELECT 1 FROM notifier.opt_outs o WHERE {where})"  # noqa: S608 - columns
