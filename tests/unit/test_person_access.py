"""What a person's right-of-access answer shows of an introduction (services/ingest/
person_access.py): their own answer in full, the others by name only once everyone said yes."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest.person_access import _as_seen_by

ME = ("crm", "ada")
SEATS = [
    {
        "source": "crm",
        "external_id": "ada",
        "answer": "accepted",
        "answered_at": "t1",
        "name": "Ada",
    },
    {
        "source": "crm",
        "external_id": "bob",
        "answer": "declined",
        "answered_at": "t2",
        "name": "Bob",
    },
]


def _intro(state: str) -> dict[str, Any]:
    return {
        "id": "i1",
        "state": state,
        "reason": "both like kelp",
        "topics": ["kelp"],
        "round": None,
        "participants": SEATS,
        "created_at": "2026-12-01T00:00:00Z",
        "updated_at": "2026-12-02T00:00:00Z",
    }


@pytest.mark.parametrize(
    ("state", "named"),
    [
        ("asked", []),
        ("declined", []),
        ("expired", []),
        ("failed", []),
        ("accepted", ["Bob"]),
        ("introduced", ["Bob"]),
    ],
)
def test_the_others_are_named_only_once_everyone_said_yes(state: str, named: list[str]) -> None:
    seen = _as_seen_by(_intro(state), {ME})
    assert seen["introduced_to"] == named
    assert seen["others"] == 1
    assert (seen["answer"], seen["answered_at"]) == ("accepted", "t1")
    # Another person's answer is theirs: never in this person's document.
    assert "declined" not in repr({k: v for k, v in seen.items() if k != "state"})


def test_a_seat_under_a_merged_identity_is_the_persons_own() -> None:
    seen = _as_seen_by(_intro("introduced"), {("crm", "bob"), ("forms", "b@x")})
    assert seen["answer"] == "declined" and seen["introduced_to"] == ["Ada"]
