"""Which items of a batch ingest accepts: whole or partial, and the interests-per-person limit."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.ingest.batch_triage import TOO_MANY_FOR_ONE_PERSON, triage
from services.ingest.schemas import BatchAccepted, InterestItems, Unparsed
from shared.events import InterestData


def _interest(external_id: str, topic: str = "kites", **extra: Any) -> dict[str, Any]:
    return {"source": "crm", "external_id": external_id, "topic": topic, **extra}


def _interests(*items: dict[str, Any]) -> list[InterestData | Unparsed]:
    return InterestItems.model_validate({"items": list(items)}).items


def test_a_bad_item_is_kept_with_its_errors_and_not_its_input() -> None:
    items = _interests(_interest("1"), _interest("2", kind="hates", secret="do not echo"))
    assert isinstance(items[0], InterestData)
    assert isinstance(items[1], Unparsed)
    assert {e["loc"] for e in items[1].errors} == {("kind",), ("secret",)}
    assert all("input" not in e for e in items[1].errors)
    assert "do not echo" not in repr(items[1].errors)


@pytest.mark.parametrize(
    "body",
    [
        {"items": []},
        {"items": [_interest("1")], "extra": 1},
        {"items": "x"},
        {"items": [_interest("1")] * 1001},
    ],
)
def test_the_envelope_is_still_checked_as_a_whole(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        InterestItems.model_validate(body)


def test_a_valid_batch_is_accepted_whole_in_order() -> None:
    sorted_items = triage(_interests(_interest("1"), _interest("2"), _interest("3")))
    assert sorted_items.indexes == [0, 1, 2]
    assert not sorted_items.errors_by_index
    assert not sorted_items.refused(partial=False)
    assert not sorted_items.refused(partial=True)


def test_bad_items_refuse_the_batch_unless_partial_and_are_located_in_the_body() -> None:
    sorted_items = triage(_interests(_interest("1"), _interest("2", kind="hates"), _interest("3")))
    assert sorted_items.refused(partial=False)
    assert not sorted_items.refused(partial=True)
    assert sorted_items.indexes == [0, 2]
    assert [e["loc"] for e in sorted_items.errors] == [("body", "items", 1, "kind")]
    [rejected] = sorted_items.rejected
    assert rejected.index == 1
    assert [(p.field, p.pointer) for p in rejected.errors] == [("items[1].kind", "#/items/1/kind")]


def test_a_batch_without_a_valid_item_is_refused_even_when_partial() -> None:
    sorted_items = triage(_interests(_interest("1", kind="x"), _interest("2", weight=99)))
    assert sorted_items.accepted == []
    assert sorted_items.refused(partial=True)
    assert [e["loc"][2] for e in sorted_items.errors] == [0, 1]


def test_missing_fields_read_as_required() -> None:
    sorted_items = triage(_interests({"source": "crm", "topic": "kites"}))
    [rejected] = sorted_items.rejected
    assert [(p.field, p.message) for p in rejected.errors] == [
        ("items[0].external_id", "is required")
    ]


def test_interests_over_the_limit_for_one_person_are_refused_from_the_first_one_over() -> None:
    items = _interests(
        _interest("ada", "a"),
        _interest("bo", "a"),
        _interest(" ada ", "b"),  # the same person once stripped
        _interest("ada", "c", kind="loves"),  # invalid: does not count
        _interest("ada", "d"),
        _interest("ada", "e"),
        _interest("bo", "b"),
    )
    sorted_items = triage(items, max_per_person=2)
    assert sorted_items.indexes == [0, 1, 2, 6]
    assert sorted(sorted_items.errors_by_index) == [3, 4, 5]
    over = [e for e in sorted_items.errors if e["type"] == TOO_MANY_FOR_ONE_PERSON]
    assert [e["loc"] for e in over] == [("body", "items", 4), ("body", "items", 5)]
    assert "limit of 2 interests" in over[0]["msg"]
    assert sorted_items.refused(partial=False)


def test_without_a_limit_any_number_of_items_for_one_person_is_fine() -> None:
    sorted_items = triage(_interests(*[_interest("ada", f"t{i}") for i in range(300)]))
    assert len(sorted_items.accepted) == 300


def test_answers_recorded_before_indexes_existed_still_replay() -> None:
    old = {"accepted": 2, "event_ids": [f"{'0' * 31}{i}" for i in (1, 2)], "correlation_id": "c"}
    answer = BatchAccepted.model_validate(old)
    assert answer.indexes == [0, 1]
    assert answer.rejected == []
