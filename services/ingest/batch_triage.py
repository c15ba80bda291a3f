"""Which items of a batch ingest accepts, as plain Python: the route parses, this decides.

Without `?partial=true` a batch is accepted whole or refused whole (422 naming every bad field).
With it, the valid items are accepted and the others reported by index; a batch with no valid
item is still a 422. An item is bad when it does not validate, or when it is an interest over
the limit of interests for one person (the same `source` and `external_id`) in one request:
the first `max_per_person` of that person's valid interests count, the later ones are refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from services.ingest.schemas import RejectedItem, Unparsed
from shared.events import ContactData, InterestData
from shared.problems import field_problems

Item = TypeVar("Item", ContactData, InterestData)

TOO_MANY_FOR_ONE_PERSON = "too_many_for_one_person"


@dataclass(frozen=True)
class Triage(Generic[Item]):
    """A batch sorted into the items to publish and the items refused, both by index."""

    accepted: list[tuple[int, Item]]
    # Pydantic-style errors (`type`, `loc`, `msg`), located in the request body: `("body",
    # "items", 3, "kind")`, so they read exactly like FastAPI's own validation errors.
    errors_by_index: dict[int, list[dict[str, Any]]]

    def refused(self, *, partial: bool) -> bool:
        """The whole request is refused (422): something is bad and the caller did not ask for
        a partial acceptance, or nothing is good."""
        return bool(self.errors_by_index) and (not partial or not self.accepted)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e for index in sorted(self.errors_by_index) for e in self.errors_by_index[index]]

    @property
    def indexes(self) -> list[int]:
        return [index for index, _ in self.accepted]

    @property
    def items(self) -> list[Item]:
        return [item for _, item in self.accepted]

    @property
    def rejected(self) -> list[RejectedItem]:
        return [
            RejectedItem(index=index, errors=field_problems(errors))
            for index, errors in sorted(self.errors_by_index.items())
        ]


def triage(items: Sequence[Item | Unparsed], *, max_per_person: int | None = None) -> Triage[Item]:
    """Sort a batch; `max_per_person` limits the items of one (source, external_id)."""
    accepted: list[tuple[int, Item]] = []
    errors: dict[int, list[dict[str, Any]]] = {}
    per_person: Counter[tuple[str, str]] = Counter()
    for index, item in enumerate(items):
        if isinstance(item, Unparsed):
            errors[index] = [_located(index, e) for e in item.errors]
            continue
        person = (item.source, item.external_id)
        per_person[person] += 1
        if max_per_person is not None and per_person[person] > max_per_person:
            errors[index] = [
                {
                    "type": TOO_MANY_FOR_ONE_PERSON,
                    "loc": ("body", "items", index),
                    "msg": f"is over the limit of {max_per_person} interests for one person "
                    "(source and external_id) in one request",
                }
            ]
            continue
        accepted.append((index, item))
    return Triage(accepted, errors)


def _located(index: int, error: Any) -> dict[str, Any]:
    """An item's own error, located in the body; only type, place and message are kept."""
    return {
        "type": error.get("type", "invalid"),
        "loc": ("body", "items", index, *error.get("loc", ())),
        "msg": error.get("msg", "is invalid"),
    }
