"""The OpenAPI and AsyncAPI documents in docs/ are what the code generates now, and the AsyncAPI
one covers every event type and every queue."""

import difflib
import json
from typing import Any

import pytest
from faststream.specification.asyncapi.v3_0_0.schema import ApplicationSchema

from services.api_docs import (
    ASYNCAPI_PATH,
    DOCS_DIR,
    EVENT_DOCS,
    bound_types,
    rendered,
    topic_matches,
)
from shared.events import EVENT_TYPES
from shared.topology import CONSUMER_QUEUES, DELAY_QUEUES, INGRESS_QUEUE


@pytest.fixture(scope="module")
def documents() -> dict[str, str]:
    return rendered()


@pytest.fixture(scope="module")
def asyncapi(documents: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(documents[ASYNCAPI_PATH])
    return document


def test_every_event_type_is_described() -> None:
    missing = sorted(set(EVENT_TYPES) - set(EVENT_DOCS))
    assert not missing, f"add {missing} to EVENT_DOCS in services/api_docs.py, then `make docs`"


def test_the_checked_in_documents_are_current(documents: dict[str, str]) -> None:
    drifted = []
    for path, text in documents.items():
        checked_in = DOCS_DIR / path
        old = checked_in.read_text("utf-8") if checked_in.is_file() else ""
        if old != text:
            diff = difflib.unified_diff(
                old.splitlines(), text.splitlines(), f"docs/{path}", "generated", lineterm="", n=1
            )
            drifted.append("\n".join(list(diff)[:40]))
    assert not drifted, (
        "docs/ is out of date with the code: run `make docs` and commit the result.\n\n"
        + "\n\n".join(drifted)
    )


def test_every_event_and_queue_is_in_the_asyncapi_document(asyncapi: dict[str, Any]) -> None:
    by_address = {channel["address"]: channel for channel in asyncapi["channels"].values()}
    queues = [q.name for q in CONSUMER_QUEUES] + [q.dead_letter_queue for q in CONSUMER_QUEUES]
    queues += [d.name for d in DELAY_QUEUES]
    assert set(EVENT_TYPES) | set(queues) <= set(by_address)
    for queue in CONSUMER_QUEUES:
        assert list(by_address[queue.name]["messages"]) == bound_types(queue, EVENT_TYPES)


def test_each_event_type_has_its_own_payload_schema(asyncapi: dict[str, Any]) -> None:
    messages = asyncapi["components"]["messages"]
    schemas = asyncapi["components"]["schemas"]
    named = {m["name"]: m for m in messages.values()}
    for event_type in EVENT_TYPES:
        payload = schemas[named[event_type]["payload"]["$ref"].rsplit("/", 1)[1]]
        event = schemas[payload["properties"]["events"]["items"]["$ref"].rsplit("/", 1)[1]]
        assert event["properties"]["type"]["const"] == event_type
        assert named[event_type]["bindings"]["amqp"]["messageType"] == event_type
    assert "EmptyPayload" not in schemas  # the raw-message handlers' placeholder is replaced


def test_every_parking_queue_says_why_in_a_header(asyncapi: dict[str, Any]) -> None:
    by_address = {channel["address"]: channel for channel in asyncapi["channels"].values()}
    messages = asyncapi["components"]["messages"]
    for queue in [*CONSUMER_QUEUES, INGRESS_QUEUE]:
        parked = by_address[queue.dead_letter_queue]["messages"]
        assert len(parked) == len(by_address[queue.name]["messages"])
        for reference in parked.values():
            headers = messages[reference["$ref"].rsplit("/", 1)[1]]["headers"]
            assert "x-roac-reason" in headers["properties"]


def test_the_asyncapi_document_is_one_faststream_can_read(asyncapi: dict[str, Any]) -> None:
    # What `faststream docs serve docs/asyncapi.json` parses it with.
    ApplicationSchema.model_validate(asyncapi)
    assert asyncapi["asyncapi"] == "3.0.0"


def test_the_openapi_documents_describe_each_service(documents: dict[str, str]) -> None:
    ingest = json.loads(documents["openapi/ingest.json"])
    assert {"/v1/contacts", "/v1/interests"} <= set(ingest["paths"])
    assert "HTTPBearer" in ingest["components"]["securitySchemes"]
    assert "/v1/rounds" in json.loads(documents["openapi/matcher.json"])["paths"]
    assert "/v1/intros" in json.loads(documents["openapi/notifier.json"])["paths"]


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("delivery.succeeded.v1", "delivery.succeeded.v1", True),
        ("delivery.*.v1", "delivery.failed.v1", True),
        ("delivery.*", "delivery.failed.v1", False),
        ("delivery.#", "delivery.failed.v1", True),
        ("#", "contact.upserted.v1", True),
        ("contact.#.v1", "contact.v1", True),
        ("intro.proposed.v1", "intro.proposed.v2", False),
    ],
)
def test_topic_matching(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches
