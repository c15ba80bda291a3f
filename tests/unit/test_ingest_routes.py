"""Ingest's routes with a fake publisher: parsing, auth, limits and answers. (That the events
really reach RabbitMQ is proven in tests/e2e.)"""

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.ingest.app import create_app
from services.ingest.publishing import Intake
from shared.api_keys import ApiKeyring
from shared.events import ContactPreferencesChanged, Event
from shared.secret_policy import new_secret
from shared.settings import Settings

KEY = new_secret()  # the services refuse placeholder secrets


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[list[Event]] = []
        self.fail = False

    async def publish(self, events: Sequence[Event]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.published.append(list(events))


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def client(publisher: FakePublisher) -> Iterator[TestClient]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.intake = Intake(publisher)

        async def readiness() -> dict[str, bool]:
            return {"broker": True, "database": False}

        app.state.readiness = readiness
        yield

    settings = Settings(api_keys=f"unit:{KEY}", ingest_max_body_bytes=10_000)
    with TestClient(
        # ROAC_API_KEYS only: the database's keys are covered by the integration tests.
        create_app(settings, lifespan, ApiKeyring(settings.api_key_secrets)),
        headers={"Authorization": f"Bearer {KEY}"},
    ) as c:
        yield c


CONTACT = {"source": "crm", "external_id": "42", "name": "Ada", "email": "ada@example.org"}


def test_single_and_batch_contacts_are_published_as_one_message(
    client: TestClient, publisher: FakePublisher
) -> None:
    single = client.post("/v1/contacts", json=CONTACT)
    batch = client.post("/v1/contacts", json={"items": [CONTACT, {**CONTACT, "external_id": "43"}]})
    assert single.status_code == batch.status_code == 202
    assert [len(m) for m in publisher.published] == [1, 2]
    assert batch.json()["accepted"] == 2
    assert publisher.published[1][0].integration == "unit"


def test_interest_topics_are_normalised_on_the_way_in(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.post(
        "/v1/interests", json={"source": "crm", "external_id": "42", "topic": "  Kite  AERIAL "}
    )
    assert response.status_code == 202
    assert publisher.published[0][0].data.topic == "kite aerial"  # type: ignore[union-attr]


def test_missing_key_is_401_before_the_body_is_read(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.post("/v1/contacts", content=b"{not json", headers={"Authorization": ""})
    assert response.status_code == 401
    assert publisher.published == []


def test_oversized_body_is_413(client: TestClient, publisher: FakePublisher) -> None:
    response = client.post("/v1/contacts", json={**CONTACT, "name": "x" * 20_000})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_oversized_body_without_content_length_is_413(
    client: TestClient, publisher: FakePublisher
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"source": "crm", "external_id": "1", "name": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}'

    response = client.post(
        "/v1/contacts", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert publisher.published == []


def test_a_batch_with_one_bad_item_is_refused_whole(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.post("/v1/contacts", json={"items": [CONTACT, {**CONTACT, "email": "nope"}]})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["items[1].email"]
    assert publisher.published == []


def test_broker_failure_is_503_and_nothing_is_accepted(
    client: TestClient, publisher: FakePublisher
) -> None:
    publisher.fail = True
    response = client.post("/v1/contacts", json=CONTACT)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_readiness_reflects_dependencies(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"broker": True, "database": False}
    assert client.get("/healthz").json() == {"status": "ok"}


def test_openapi_documents_the_api_and_its_security(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/contacts", "/v1/interests"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


def test_metrics_label_routes_by_template(client: TestClient) -> None:
    client.post("/v1/contacts", json=CONTACT)
    text = client.get("/metrics").text
    assert (
        'roac_ingest_http_requests_total{method="POST",route="/v1/contacts",status="202"}' in text
    )


def test_an_external_id_with_a_slash_can_be_erased_and_opted_out(
    client: TestClient, publisher: FakePublisher
) -> None:
    erased = client.delete("/v1/contacts/crm/team%2F42")
    opted_out = client.post("/v1/contacts/crm/team%2F42/opt-out")
    assert erased.status_code == opted_out.status_code == 202, (erased.text, opted_out.text)
    refs = [(m[0].data.source, m[0].data.external_id) for m in publisher.published]  # type: ignore[union-attr]
    assert refs == [("crm", "team/42"), ("crm", "team/42")]
    assert publisher.published[1][0].type == "contact.opted_out.v1"


def test_the_route_publishes_one_event_from_ingest_naming_what_changed(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.post(
        "/v1/contacts/crm/team%2F42/preferences",
        json={"paused_until": "2027-04-01T00:00:00Z", "language": "de"},
    )
    assert response.status_code == 202, response.text
    [[event]] = publisher.published
    assert isinstance(event, ContactPreferencesChanged)
    assert response.json()["event_ids"] == [str(event.message_id)]
    assert (event.source, event.integration) == ("ingest", "unit")
    assert (event.data.source, event.data.external_id) == ("crm", "team/42")
    assert event.data.changed == ["paused_until", "language"]


def test_an_empty_body_is_a_422_naming_it(client: TestClient, publisher: FakePublisher) -> None:
    response = client.post("/v1/contacts/crm/42/preferences", json={})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert "sets none of paused_until" in error["message"], error
    assert publisher.published == []
