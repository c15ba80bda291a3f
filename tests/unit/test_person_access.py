"""A person's right-of-access answer (services/ingest/person_access.py): what it shows of an
introduction (their own answer in full, the others by name only once everyone said yes), and
how it gathers the record from the matcher and the notifier."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from services.ingest.person_access import (
    AccessUnavailable,
    PersonAccess,
    Refused,
    ServiceUrls,
    _as_seen_by,
)
from shared.events import ContactRef

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


# PersonAccess against stand-ins of the matcher's and the notifier's APIs (httpx.MockTransport):
# which calls it makes with whose key, how it pages, and what it passes on.

MATCHER, NOTIFIER = "http://matcher.test", "http://notifier.test"
HELD = {
    "name": "Ada",
    "identities": [
        {"source": "crm", "external_id": "ada"},
        {"source": "forms", "external_id": "a@x"},
    ],
}


def _intros_of(external_id: str, count: int, instant: str) -> list[dict[str, Any]]:
    """`count` introductions made in one transaction: one created_at, ids in descending order."""
    return [
        {
            "id": f"{external_id}-{n:03d}",
            "state": "introduced",
            "created_at": instant,
            "participants": [{"source": "crm", "external_id": external_id, "name": "Ada"}],
        }
        for n in range(count, 0, -1)
    ]


def _access(
    handler: Callable[[httpx.Request], httpx.Response],
) -> tuple[PersonAccess, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(recording))
    return PersonAccess(client, ServiceUrls(MATCHER, NOTIFIER)), seen


def _notifier_pages(intros: dict[str, list[dict[str, Any]]]) -> Callable[..., httpx.Response]:
    """The notifier's keyset paging: newest first, ties by id, after (before, before_id)."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "matcher.test":
            return httpx.Response(200, json=HELD)
        external_id = unquote(request.url.path.split("/")[4])
        limit = int(request.url.params["limit"])
        rows = sorted(intros.get(external_id, []), key=lambda i: (i["created_at"], i["id"]))[::-1]
        if "before" in request.url.params:
            after = (request.url.params["before"], request.url.params["before_id"])
            rows = [r for r in rows if (r["created_at"], r["id"]) < after]
        return httpx.Response(200, json={"intros": rows[:limit]})

    return answer


def test_every_identity_is_asked_and_pages_split_in_one_instant_lose_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("services.ingest.person_access.INTROS_PAGE", 2)
    access, seen = _access(
        _notifier_pages({"ada": _intros_of("ada", 5, "2026-12-01T10:00:00+00:00")})
    )
    record = asyncio.run(
        access.record(ContactRef(source="crm", external_id="ada"), "Bearer caller")
    )
    assert sorted(i["id"] for i in record["introductions"]) == [
        f"ada-{n:03d}" for n in (1, 2, 3, 4, 5)
    ]
    assert {r.headers["authorization"] for r in seen} == {"Bearer caller"}  # the caller's own
    asked = {unquote(r.url.path) for r in seen if r.url.host == "notifier.test"}
    assert asked == {"/v1/contacts/crm/ada/intros", "/v1/contacts/forms/a@x/intros"}


@pytest.mark.parametrize(
    ("service", "status"),
    [("matcher", 404), ("matcher", 403), ("notifier", 403), ("notifier", 401)],
)
def test_a_refusal_is_passed_on_as_it_is(service: str, status: int) -> None:
    problem = {"title": "Refused", "status": status, "detail": "needs intros:read"}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == f"{service}.test":
            return httpx.Response(status, json=problem)
        return _notifier_pages({})(request)

    access, _ = _access(answer)
    with pytest.raises(Refused) as refused:
        asyncio.run(access.record(ContactRef(source="crm", external_id="ada"), "Bearer k"))
    assert (refused.value.status, refused.value.problem) == (status, problem)


@pytest.mark.parametrize("failure", ["connect", "500", "502"])
def test_a_service_that_fails_makes_the_whole_answer_unavailable(failure: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "notifier.test":
            if failure == "connect":
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(int(failure), text="oops")
        return httpx.Response(200, json=HELD)

    access, _ = _access(answer)
    with pytest.raises(AccessUnavailable):
        asyncio.run(access.record(ContactRef(source="crm", external_id="ada"), "Bearer k"))
