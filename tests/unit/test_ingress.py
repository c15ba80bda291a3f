"""The AMQP ingress's decisions without a broker: validation as over HTTP, readable reasons free
of input values, repeatable event ids, and which outcome each failure gets. (Routing, parking and
confirms on the real RabbitMQ: tests/integration/test_ingress.py.)"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from services.api_docs import asyncapi_document
from services.ingest.amqp_ingress import (
    DEFAULT_INTEGRATION,
    Ingress,
    IngressMessage,
    Invalid,
    KeysNotLoaded,
    Outcome,
    ParkFailed,
    Valid,
    examine,
    ingress_key,
    sender_of,
    source_refusal,
)
from services.ingest.idempotency import event_id
from services.ingest.schemas import MAX_BATCH_ITEMS
from shared.events import ContactUpserted, Event, InterestDeclared, InterestKind, InterestWithdrawn
from shared.scopes import Grant, Scope

LIMIT = 10_000
CONTACT = {"source": "crm", "external_id": "42", "name": "Ada Quinn", "email": "ada@example.org"}
INTEREST = {"source": "crm", "external_id": "42", "topic": "Kite  Photography", "kind": "seeks"}


def message(
    body: Any, routing_key: str = "contacts", message_id: str | None = "m-1", **extra: Any
) -> IngressMessage:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return IngressMessage(body=raw, routing_key=routing_key, message_id=message_id, **extra)


def valid(found: Valid | Invalid) -> Valid:
    assert isinstance(found, Valid), found
    return found


def reason(found: Valid | Invalid) -> str:
    assert isinstance(found, Invalid), found
    return found.reason


def test_one_contact_or_a_batch_is_valid_as_over_http() -> None:
    single = valid(examine(message(CONTACT), max_body_bytes=LIMIT))
    assert [c.external_id for c in single.contacts] == ["42"]
    assert single.interests == []
    batch = valid(
        examine(message({"items": [INTEREST, INTEREST]}, "interests"), max_body_bytes=LIMIT)
    )
    assert [i.topic for i in batch.interests] == ["kite photography"] * 2
    assert batch.contacts == []


def test_the_integration_is_the_user_id_or_amqp() -> None:
    assert valid(examine(message(CONTACT), max_body_bytes=LIMIT)).integration == "amqp"
    by_user = examine(message(CONTACT, user_id="crm-sync"), max_body_bytes=LIMIT)
    assert valid(by_user).integration == "crm-sync"
    assert DEFAULT_INTEGRATION == "amqp"


def test_the_correlation_id_is_kept_or_taken_from_the_message_id() -> None:
    kept = examine(message(CONTACT, correlation_id="req-7"), max_body_bytes=LIMIT)
    assert valid(kept).correlation_id == "req-7"
    assert valid(examine(message(CONTACT), max_body_bytes=LIMIT)).correlation_id == "m-1"


def test_the_bulk_header_marks_a_bulk_load() -> None:
    assert not valid(examine(message(CONTACT), max_body_bytes=LIMIT)).bulk
    for flag in (True, "true", b"TRUE"):
        flagged = examine(message(CONTACT, headers={"x-roac-bulk": flag}), max_body_bytes=LIMIT)
        assert valid(flagged).bulk


def test_event_ids_derive_from_routing_key_and_message_id_apart_from_http_keys() -> None:
    first = valid(examine(message(CONTACT), max_body_bytes=LIMIT)).keyed
    again = valid(examine(message(CONTACT), max_body_bytes=LIMIT)).keyed
    assert first.key == again.key == ingress_key("contacts", "m-1")
    assert ingress_key("contacts", "m-1") != ingress_key("interests", "m-1")
    # An HTTP Idempotency-Key has no spaces: it can never be the same key.
    assert " " in first.key


@pytest.mark.parametrize(
    ("routing_key", "message_id", "body", "expected"),
    [
        (
            "contact",
            "m",
            CONTACT,
            "unknown routing key: publish with 'contacts', 'interests' or 'interests.withdraw'",
        ),
        ("contacts", None, CONTACT, "the message_id property is required"),
        ("contacts", "", CONTACT, "the message_id property is required"),
        ("contacts", "m", b'{"source": "crm",', "body is not JSON: Expecting"),
        ("contacts", "m", b"\xff\xfe\x00garbage", "body is not JSON"),
        ("contacts", "m", b"x" * (LIMIT + 1), f"body is {LIMIT + 1} bytes, over the limit"),
    ],
)
def test_what_is_not_a_request_body_is_invalid(
    routing_key: str, message_id: str | None, body: bytes | dict[str, str], expected: str
) -> None:
    found = examine(message(body, routing_key, message_id), max_body_bytes=LIMIT)
    assert reason(found).startswith(expected)


def test_field_errors_name_every_field_and_error_type_but_no_value() -> None:
    secret_email = "ada.private-address@@example"
    secret_name = "Ada\nQuinn-Secret"
    body = {
        "items": [
            CONTACT,
            {**CONTACT, "email": secret_email},
            {**CONTACT, "name": secret_name, "timezone": "Mars/Olympus"},
            {**CONTACT, "nickname": "Secret-Nick"},
        ]
    }
    text = reason(examine(message(body), max_body_bytes=LIMIT))
    assert text.startswith("4 invalid fields: ")
    assert "items[1].email: " in text and "[value_error]" in text
    assert "items[2].name: " in text and "items[2].timezone: " in text
    assert "items[3].nickname: Extra inputs are not permitted [extra_forbidden]" in text
    for value in (secret_email, secret_name, "Secret", "Olympus"):
        assert value not in text


def test_interest_errors_on_the_interests_key() -> None:
    text = reason(
        examine(message({**INTEREST, "kind": "loves"}, "interests"), max_body_bytes=LIMIT)
    )
    assert text.startswith("1 invalid field: kind: ")
    assert "[enum]" in text and "loves" not in text
    # A contact body on the interests key is as wrong as it would be on POST /v1/interests.
    assert "topic: " in reason(examine(message(CONTACT, "interests"), max_body_bytes=LIMIT))


def test_the_limits_are_the_http_api_s() -> None:
    too_many = {"items": [CONTACT] * (MAX_BATCH_ITEMS + 1)}
    text = reason(examine(message(too_many), max_body_bytes=10_000_000))
    assert text.startswith("1 invalid field: items: ") and "[too_long]" in text
    long_name = reason(examine(message({**CONTACT, "name": "x" * 201}), max_body_bytes=LIMIT))
    assert long_name.startswith("1 invalid field: name: ") and "[string_too_long]" in long_name
    assert "xxxx" not in long_name
    empty = reason(examine(message({"items": []}), max_body_bytes=LIMIT))
    assert "items: " in empty and "[too_short]" in empty
    not_an_object = reason(examine(message([CONTACT]), max_body_bytes=LIMIT))
    assert not_an_object.startswith("1 invalid field: body: ")


def test_a_long_list_of_errors_is_cut_short() -> None:
    body = {"items": [{**CONTACT, "email": f"bad{i}"} for i in range(60)]}
    text = reason(examine(message(body), max_body_bytes=1_000_000))
    assert text.startswith("60 invalid fields: ") and text.endswith(" more")
    assert len(text) <= 2000
    listed = text.count("[value_error]")
    assert 0 < listed <= 20 and text.endswith(f"; and {60 - listed} more")


# --- the use case, with fakes for RabbitMQ ---------------------------------------------------


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[list[Event]] = []
        self.fail: Exception | None = None

    async def publish(self, events: Sequence[Event]) -> None:
        if self.fail is not None:
            raise self.fail
        self.published.append(list(events))


class FakeParker:
    def __init__(self) -> None:
        self.parked: list[tuple[IngressMessage, str]] = []
        self.fail: Exception | None = None

    async def park(self, message: IngressMessage, reason: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.parked.append((message, reason))


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def parker() -> FakeParker:
    return FakeParker()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def ingress(publisher: FakePublisher, parker: FakeParker, sleeps: Sleeps) -> Ingress:
    return Ingress(publisher, parker, max_body_bytes=LIMIT, sleep=sleeps)


async def test_a_valid_message_becomes_events_with_repeatable_ids(
    ingress: Ingress, publisher: FakePublisher, parker: FakeParker
) -> None:
    batch = message({"items": [INTEREST, {**INTEREST, "external_id": "43"}]}, "interests")
    assert await ingress.handle(batch) is Outcome.ACCEPTED
    assert await ingress.handle(batch) is Outcome.ACCEPTED  # a redelivery
    first, again = publisher.published
    assert all(isinstance(e, InterestDeclared) for e in first)
    assert [e.message_id for e in first] == [e.message_id for e in again]
    key = ingress_key("interests", "m-1")
    assert [e.message_id for e in first] == [event_id("amqp", key, i) for i in range(2)]
    assert {e.integration for e in first} == {"amqp"}
    assert parker.parked == []


async def test_another_message_id_gets_other_event_ids(
    ingress: Ingress, publisher: FakePublisher
) -> None:
    await ingress.handle(message(CONTACT, message_id="a"))
    await ingress.handle(message(CONTACT, message_id="b"))
    [[first], [second]] = publisher.published
    assert isinstance(first, ContactUpserted) and isinstance(second, ContactUpserted)
    assert first.message_id != second.message_id


async def test_an_invalid_message_is_parked_and_publishes_nothing(
    ingress: Ingress, publisher: FakePublisher, parker: FakeParker
) -> None:
    poison = message(b"not json")
    assert await ingress.handle(poison) is Outcome.PARKED
    [(parked, why)] = parker.parked
    assert parked is poison and why.startswith("body is not JSON")
    assert publisher.published == []


@pytest.mark.parametrize("failure", [ConnectionError("down"), TimeoutError()])
async def test_an_unconfirmed_publish_is_requeued_after_a_pause(
    ingress: Ingress, publisher: FakePublisher, sleeps: Sleeps, failure: Exception
) -> None:
    publisher.fail = failure
    assert await ingress.handle(message(CONTACT, delivery_count=2)) is Outcome.REQUEUED
    assert sleeps.delays == [2.0]


async def test_an_unconfirmed_park_is_requeued(
    ingress: Ingress, parker: FakeParker, sleeps: Sleeps
) -> None:
    parker.fail = ParkFailed("DeliveryError")
    assert await ingress.handle(message(b"{")) is Outcome.REQUEUED
    assert sleeps.delays == [0.5]


async def test_a_bug_rejects_the_message(ingress: Ingress, parker: FakeParker) -> None:
    parker.fail = ValueError("a bug")
    assert await ingress.handle(message(b"{")) is Outcome.REJECTED


# --- the AsyncAPI document -------------------------------------------------------------------


def test_the_asyncapi_document_describes_the_ingress_and_its_parking_queue() -> None:
    document = asyncapi_document()
    channels = {c["address"]: c for c in document["channels"].values()}
    messages = document["components"]["messages"]
    for routing_key in ("contacts", "interests", "interests.withdraw"):
        exchange = channels[routing_key]["bindings"]["amqp"]["exchange"]
        assert exchange["name"] == "roac.ingress" and exchange["type"] == "topic"
    queue = channels["roac.ingest.ingress"]
    assert queue["x-amqp-bindings"] == [{"exchange": "roac.ingress", "routingKey": "#"}]
    assert queue["x-amqp-arguments"]["x-dead-letter-exchange"] == "roac.dead-letter"
    assert list(queue["messages"]) == ["contacts", "interests", "interests.withdraw"]
    parked = channels["roac.ingest.ingress.dlq"]
    assert parked["x-amqp-bindings"] == [
        {"exchange": "roac.dead-letter", "routingKey": "roac.ingest.ingress"}
    ]
    for reference in parked["messages"].values():
        message = messages[reference["$ref"].rsplit("/", 1)[1]]
        assert set(message["headers"]["properties"]) == {"x-roac-reason", "x-roac-routing-key"}


def test_interests_over_the_per_person_limit_park_the_message_as_over_http() -> None:
    three = {"items": [{**INTEREST, "topic": f"topic {i}"} for i in range(3)]}
    assert isinstance(
        examine(message(three, "interests"), max_body_bytes=LIMIT, max_interests_per_person=3),
        Valid,
    )
    verdict = examine(message(three, "interests"), max_body_bytes=LIMIT, max_interests_per_person=2)
    assert isinstance(verdict, Invalid)
    assert "items[2]" in verdict.reason and "too_many_for_one_person" in verdict.reason


def _grant(sources: frozenset[str] | None, *scopes: Scope) -> Grant:
    return Grant("crm-bus", frozenset(scopes or (Scope.EVENTS_WRITE,)), sources)


@pytest.mark.parametrize(
    ("sources", "grant", "bound_only", "refused"),
    [
        (["crm"], None, False, None),  # no key of its name: not bound (unless required)
        (["crm"], None, True, "has no API key of its name"),
        (["crm"], _grant(frozenset({"crm"})), True, None),
        (["crm", "forum"], _grant(frozenset({"crm"})), False, "not forum"),
        (["forum"], _grant(None), False, None),  # a key for any source
        (["crm"], _grant(frozenset({"crm"}), Scope.ROUNDS_WRITE), False, "'events:write'"),
    ],
)
def test_a_sender_named_like_an_api_key_writes_only_its_sources(
    sources: list[str], grant: Grant | None, bound_only: bool, refused: str | None
) -> None:
    reason = source_refusal("crm-bus", sources, grant, bound_only=bound_only)
    assert (reason is None) if refused is None else (reason is not None and refused in reason)


def test_a_message_is_judged_against_its_senders_key_once_keys_are_loaded() -> None:
    forum = {**CONTACT, "source": "forum"}
    grants = {"crm-bus": _grant(frozenset({"crm"}))}
    verdict = examine(
        message(forum, user_id="crm-bus"), max_body_bytes=LIMIT, grant_named=grants.get
    )
    assert isinstance(verdict, Invalid) and "not forum" in verdict.reason
    with pytest.raises(KeysNotLoaded):
        examine(
            message(forum, user_id="crm-bus"),
            max_body_bytes=LIMIT,
            grant_named=grants.get,
            keys_loaded=lambda: False,
        )


# --- withdrawing interests (routing key interests.withdraw) ----------------------------------


async def test_withdrawals_become_interest_withdrawn_events(
    ingress: Ingress, publisher: FakePublisher, parker: FakeParker
) -> None:
    one = {"source": "crm", "external_id": "42", "topic": "Kite  Photography", "kind": "seeks"}
    every_kind = {"source": "crm", "external_id": "43", "topic": "kites"}
    batch = message({"items": [one, every_kind]}, "interests.withdraw")
    assert await ingress.handle(batch) is Outcome.ACCEPTED
    [events] = publisher.published
    assert all(isinstance(e, InterestWithdrawn) for e in events)
    data = [e.data for e in events if isinstance(e, InterestWithdrawn)]
    assert [(d.topic, d.kind) for d in data] == [
        ("kite photography", InterestKind.SEEKS),
        ("kites", None),
    ]
    key = ingress_key("interests.withdraw", "m-1")
    assert [e.message_id for e in events] == [event_id("amqp", key, i) for i in range(2)]
    assert parker.parked == []


def test_a_withdrawal_is_judged_as_the_delete_route_judges_it() -> None:
    no_topic = {"source": "crm", "external_id": "42"}
    assert "topic" in reason(examine(message(no_topic, "interests.withdraw"), max_body_bytes=LIMIT))
    extra = {"source": "crm", "external_id": "42", "topic": "kites", "weight": 1}
    assert "weight" in reason(examine(message(extra, "interests.withdraw"), max_body_bytes=LIMIT))
    forum = {"source": "forum", "external_id": "42", "topic": "kites"}
    grants = {"crm-bus": _grant(frozenset({"crm"}))}
    verdict = examine(
        message(forum, "interests.withdraw", user_id="crm-bus"),
        max_body_bytes=LIMIT,
        grant_named=grants.get,
    )
    assert "not forum" in reason(verdict)


@pytest.mark.parametrize(
    ("user_id", "headers", "sender"),
    [
        ("crm-bus", {}, "crm-bus"),  # RabbitMQ checked it against the connection's user
        (None, {}, None),
        # Only roac's own user republishes with the recorded sender (roac dlq replay) ...
        ("roac", {"x-roac-sender": "crm-bus"}, "crm-bus"),
        ("roac", {"x-roac-sender": b"crm-bus"}, "crm-bus"),
        ("roac", {"x-roac-sender": ""}, None),  # parked without a user_id
        ("roac", {}, "roac"),
        # ... an integration's own header claims nothing.
        ("crm-bus", {"x-roac-sender": "forum-bus"}, "crm-bus"),
        (None, {"x-roac-sender": "forum-bus"}, None),
    ],
)
def test_a_replayed_message_is_judged_as_its_original_sender(
    user_id: str | None, headers: dict[str, object], sender: str | None
) -> None:
    assert sender_of(user_id, headers, roac_user="roac") == sender
