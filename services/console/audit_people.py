"""How the audit list names people, and how a mention of an erased one is forgotten: one rule,
used when a person is erased through the console and by the erasure sweep
(services/console/erasure_sweep.py) for people erased through the API.

A person is written `source/external_id` (a source holds no slash, an id may: the first slash
splits them) in the row's `people` list, and `person source/external_id` in its target and in
the detail text the pages write (`never with person crm/bob-2; console-block-…`,
`merge … undone: person crm/a, person crm/b apart again; …`). Forgetting one replaces each of
those mentions with "an erased person" and nothing else: a mention counts only where the
console's own wording puts one (after a space or at the start, before "; ", ", person ",
" apart again" or the end), so forgetting `crm/ada-1` leaves `crm/ada-10` named."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ERASED = "an erased person"
# What follows a mention in the texts the console writes (services/console/people_pages.py).
_MENTION_ENDS = ("; ", ", person ", " apart again")


def person_of(source: str, external_id: str) -> str:
    """A person as the audit list's `people` holds them."""
    return f"{source}/{external_id}"


def ref_of(person: str) -> tuple[str, str] | None:
    """The (source, external_id) of an entry of `people`; None for anything else (the
    placeholder of a forgotten person has no slash)."""
    source, slash, external_id = person.partition("/")
    if not slash or not source or not external_id or " " in source:
        return None
    return source, external_id


def people_named(people: Iterable[str]) -> list[str]:
    """The entries to record: each person once, in the order given, none empty."""
    return list(dict.fromkeys(p for p in people if ref_of(p) is not None))


def forget_in_text(text: str, person: str) -> str:
    """`text` with every mention `person <person>` replaced by ERASED (see the module's note on
    what counts as a mention)."""
    needle = f"person {person}"
    kept: list[str] = []
    start = 0
    while (found := text.find(needle, start)) >= 0:
        end = found + len(needle)
        rest = text[end:]
        at_a_word = found == 0 or text[found - 1] == " "
        if at_a_word and (not rest or rest.startswith(_MENTION_ENDS)):
            kept += [text[start:found], ERASED]
        else:
            kept.append(text[start:end])
        start = end
    kept.append(text[start:])
    return "".join(kept)


@dataclass(frozen=True)
class AuditRow:
    """The parts of an audit row that can name a person."""

    target: str
    detail: str
    people: Sequence[str]


def forget_in_row(row: AuditRow, person: str) -> AuditRow:
    """The row with every mention of `person` replaced: its target, its detail, its entry in
    `people` (the placeholder keeps its place, so the row still says how many it named)."""
    return AuditRow(
        target=forget_in_text(row.target, person),
        detail=forget_in_text(row.detail, person),
        people=[ERASED if p == person else p for p in row.people],
    )
