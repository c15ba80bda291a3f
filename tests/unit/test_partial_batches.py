"""`?partial=true` and the interests-per-person limit through ingest's routes, with a fake
publisher and an in-memory Idempotency-Key store. (Against RabbitMQ: tests/e2e.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.ingest.app import create_app
from services.ingest.idempotency import Verdict, event_id
from services.ingest.publishing import Intake
from shared.api_keys import ApiKeyring
from shared.events import Event
from shared.secret_policy import new_secret
from shared.settings import Settings

KEY = new_secret()  # the services refuse placeholder secrets


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[list[Event]] = []

    async def publish(self, events: Sequence[Event]) -> None:
        self.published.append(list(events))


class MemoryKeys:
    """The Idempotency-Key store's contract, without PostgreSQL (and without abandonment)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[bytes, dict[str, Any] | None]] = {}

    async def claim(
        self,
        integration: str,
        key: str,
        fingerprint: bytes,
        legacy: Callable[[], bytes] | None = None,
    ) -> tuple[Verdict, dict[str, Any] | None]:
        row = self.rows.get((integration, key))
        if row is None:
            self.rows[(integration, key)] = (fingerprint, None)
            return Verdict.PROCEED, None
        if row[0] != fingerprint:
            return Verdict.CONFLICT, None
        return (Verdict.REPLAY, row[1]) if row[1] is not None else (Verdict.IN_PROGRESS, None)

    async def complete(self, integration: str, key: str, response: dict[str, Any]) -> None:
        self.rows[(integration, key)] = (self.rows[(integration, key)][0], response)

    async def release(self, integration: str, key: str) -> None:
        self.rows.pop((integration, key), None)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def client(publisher: FakePublisher) -> Iterator[TestClient]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.intake = Intake(publisher, MemoryKeys())
        yield

    settings = Settings(api_keys=f"unit:{KEY}", ingest_max_interests_per_person=3)
    with TestClient(
        create_app(settings, lifespan, ApiKeyring(settings.api_key_secrets)),
        headers={"Authorization": f"Bearer {KEY}"},
    ) as c:
        yield c


def _person(external_id: str, **extra: Any) -> dict[str, Any]:
    return {"source": "crm", "external_id": external_id, "name": f"P {external_id}", **extra}


def _interest(external_id: str, topic: str, **extra: Any) -> dict[str, Any]:
    return {"source": "crm", "external_id": external_id, "topic": topic, **extra}


def test_partial_publishes_the_valid_items_and_names_the_others_by_index(
    client: TestClient, publisher: FakePublisher
) -> None:
    items = [_person("1"), _person("2", email="nope"), _person("3"), {"source": "crm"}]
    response = client.post("/v1/contacts", params={"partial": "true"}, json={"items": items})
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2 and body["indexes"] == [0, 2]
    [published] = publisher.published
    assert [str(e.message_id) for e in published] == body["event_ids"]
    assert [e.data.external_id for e in published] == ["1", "3"]  # type: ignore[union-attr]
    assert [r["index"] for r in body["rejected"]] == [1, 3]
    assert [e["field"] for e in body["rejected"][0]["errors"]] == ["items[1].email"]
    assert {e["field"] for e in body["rejected"][1]["errors"]} == {
        "items[3].external_id",
        "items[3].name",
    }
    assert "nope" not in response.text  # no input value is echoed


def test_without_the_flag_one_bad_item_refuses_the_batch_as_before(
    client: TestClient, publisher: FakePublisher
) -> None:
    items = [_person("1"), _person("2", email="nope")]
    response = client.post("/v1/contacts", json={"items": items})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["items[1].email"]
    assert publisher.published == []


def test_a_partial_batch_without_a_valid_item_is_a_422(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.post(
        "/v1/interests?partial=true", json={"items": [_interest("1", "kites", kind="loves")]}
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["items[0].kind"]
    assert publisher.published == []


def test_a_whole_batch_answers_every_index_and_no_rejection(client: TestClient) -> None:
    response = client.post("/v1/contacts", json={"items": [_person("1"), _person("2")]})
    assert response.status_code == 202
    assert response.json()["indexes"] == [0, 1]
    assert response.json()["rejected"] == []
    single = client.post("/v1/contacts?partial=true", json=_person("1"))
    assert single.status_code == 202 and single.json()["indexes"] == [0]


def test_more_interests_for_one_person_than_the_limit_are_refused_by_index(
    client: TestClient, publisher: FakePublisher
) -> None:
    items = [_interest("ada", f"t{i}") for i in range(5)] + [_interest("bo", "t0")]
    refused = client.post("/v1/interests", json={"items": items})
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["items[3]", "items[4]"]
    assert "limit of 3 interests" in refused.json()["errors"][0]["message"]
    assert publisher.published == []

    partial = client.post("/v1/interests?partial=true", json={"items": items})
    assert partial.status_code == 202
    assert partial.json()["indexes"] == [0, 1, 2, 5]
    assert [r["index"] for r in partial.json()["rejected"]] == [3, 4]


def test_a_retry_of_a_partial_batch_gets_the_same_answer_and_publishes_nothing(
    client: TestClient, publisher: FakePublisher
) -> None:
    items = [_person("1"), _person("2", timezone="Mars/Olympus"), _person("3")]
    headers = {"Idempotency-Key": "partial-1"}
    first = client.post("/v1/contacts?partial=true", json={"items": items}, headers=headers)
    again = client.post("/v1/contacts?partial=true", json={"items": items}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(publisher.published) == 1
    # The flag is part of the request: the same key and body without it is another request.
    valid, key = {"items": [_person("4")]}, {"Idempotency-Key": "partial-2"}
    assert client.post("/v1/contacts?partial=true", json=valid, headers=key).status_code == 202
    assert client.post("/v1/contacts", json=valid, headers=key).status_code == 409


def test_keyed_event_ids_derive_from_the_items_index(client: TestClient) -> None:
    items = [_person("1", email="nope"), _person("2")]
    response = client.post(
        "/v1/contacts?partial=true", json={"items": items}, headers={"Idempotency-Key": "a"}
    )
    assert response.json()["indexes"] == [1]
    assert response.json()["event_ids"] == [str(event_id("unit", "a", 1))]


def test_a_person_in_the_path_that_is_only_whitespace_is_a_422_not_a_500(
    client: TestClient,
) -> None:
    for request in (client.delete, client.post):
        path = "/v1/contacts/crm/%C2%85" + ("/opt-out" if request == client.post else "")
        response = request(path)
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == ["path.external_id"]
