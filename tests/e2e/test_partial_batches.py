"""`?partial=true` and the interests-per-person limit against the live ingest: what is
accepted reaches RabbitMQ, what is refused does not, and a keyed retry changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, new_person, run_id
from tests.support.amqp import connect, drain, tap

pytestmark = pytest.mark.e2e

# Stored, but introducing nobody at once: these tests are about ingest, not about matching.
BULK = {"X-Roac-Bulk": "true"}


def _published(stack: Stack, binding: str, action: Callable[[], None]) -> list[dict[str, Any]]:
    """The events of `binding` published while `action` ran."""

    async def scenario() -> list[dict[str, Any]]:
        connection = await connect(stack.infra.amqp_url)
        async with connection:
            observed = await tap(connection, binding)
            await asyncio.to_thread(action)
            return [
                e for m in await drain(observed, settle=1.0) for e in json.loads(m.body)["events"]
            ]

    return asyncio.run(scenario())


def _interest(run: str, person: str, topic: str) -> dict[str, str]:
    return {"source": "e2e", "external_id": f"{run}-{person}", "topic": f"{topic} {run}"}


def test_partial_accepts_the_valid_items_and_a_retry_gets_the_same_answer(stack: Stack) -> None:
    run = run_id()
    items = [
        new_person(run, 0),
        {**new_person(run, 1), "email": "not an address"},
        new_person(run, 2),
        {**new_person(run, 3), "timezone": "Mars/Olympus"},
    ]
    answers: list[httpx.Response] = []

    def post_twice() -> None:
        headers = {**BULK, "Idempotency-Key": f"partial-{run}"}
        with stack.client(headers=headers) as client:
            for _ in range(2):
                answers.append(
                    client.post("/v1/contacts", params={"partial": "true"}, json={"items": items})
                )

    events = _published(stack, "contact.upserted.v1", post_twice)
    first, retry = answers
    assert first.status_code == retry.status_code == 202
    assert first.json() == retry.json()
    assert retry.headers["idempotent-replayed"] == "true"
    body = first.json()
    assert body["accepted"] == 2 and body["indexes"] == [0, 2]
    assert [(r["index"], [e["field"] for e in r["errors"]]) for r in body["rejected"]] == [
        (1, ["items[1].email"]),
        (3, ["items[3].timezone"]),
    ]
    assert "not an address" not in first.text and "Mars" not in first.text
    mine = {e["message_id"]: e["data"]["external_id"] for e in events if run in e["data"]["name"]}
    # Published once, and each event id is the item at the same place in `indexes`.
    assert len(mine) == 2
    assert [mine[i] for i in body["event_ids"]] == [f"{run}-0", f"{run}-2"]


def test_more_interests_for_one_person_than_the_limit_are_refused(stack: Stack) -> None:
    run = run_id()
    items = [_interest(run, "ada", f"topic {i}") for i in range(101)]
    items.append(_interest(run, "bo", "topic 0"))
    answers: list[httpx.Response] = []

    def post() -> None:
        with stack.client(headers=BULK) as client:
            answers.append(client.post("/v1/interests", json={"items": items}))
            answers.append(client.post("/v1/interests?partial=true", json={"items": items}))

    events = _published(stack, "interest.declared.v1", post)
    refused, partial = answers
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in refused.json()["errors"]] == ["items[100]"]
    assert "limit of 100 interests" in refused.json()["errors"][0]["message"]

    assert partial.status_code == 202
    assert partial.json()["indexes"] == [*range(100), 101]
    assert [r["index"] for r in partial.json()["rejected"]] == [100]
    mine = [e for e in events if e["data"]["external_id"].startswith(run)]
    # Only the partial request's 101 events were published; the refused one published nothing.
    assert sorted(e["message_id"] for e in mine) == sorted(partial.json()["event_ids"])


def test_a_partial_batch_with_no_valid_item_is_refused(stack: Stack) -> None:
    run = run_id()
    items = [{**_interest(run, "ada", "kites"), "kind": "loves"}]

    def post() -> None:
        with stack.client(headers=BULK) as client:
            response = client.post("/v1/interests?partial=true", json={"items": items})
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == ["items[0].kind"]

    events = _published(stack, "interest.declared.v1", post)
    assert [e for e in events if e["data"]["external_id"].startswith(run)] == []
