"""The subscribers declare the `EventBatch` they take (so FastStream documents it) and keep
roac's consumer policy (shared/consumer.py): the body is parsed once, by the decoder; a body
that does not parse is rejected and counted, not lost in a framework error; a message with one
invalid event applies the others and parks that one alone, with its reason. In memory
(FastStream's TestRabbitBroker: acks are no-ops, so the outcome is read from the policy's
metric and the parked copies); against RabbitMQ: tests/integration/test_poison_isolation.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from faststream.rabbit import RabbitBroker, TestRabbitBroker
from faststream.rabbit.annotations import RabbitMessage
from faststream.specification import AsyncAPI

from services.asyncapi_amqp import AsyncApiDocument
from services.notifier import subscriptions as notifier_subscriptions
from shared import consumer, events
from shared.events import ContactOptedOut, EventBatch, OptOutData, encode_batch
from shared.metrics import MESSAGES_HANDLED
from shared.topology import MATCHER_QUEUE, NOTIFIER_QUEUE, QUEUE_HEADER, REASON_HEADER


class People:
    """The notifier's people use case, recording what it is given."""

    def __init__(self) -> None:
        self.applied: list[EventBatch] = []

    async def apply(self, batch: EventBatch) -> None:
        self.applied.append(batch)

    async def apply_merges(self, batch: EventBatch) -> None:
        self.applied.append(batch)


class Unused:
    """A use case these messages must never reach."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def refuse(*_args: Any) -> None:
            raise AssertionError(f"{name} called")

        return refuse


def _opt_out(external_id: str) -> ContactOptedOut:
    return ContactOptedOut(
        source="notifier",
        correlation_id="typed",
        data=OptOutData(source="crm", external_id=external_id),
    )


def _rejected() -> float:
    value: float = MESSAGES_HANDLED.labels("notifier", NOTIFIER_QUEUE.name, "rejected")._value.get()
    return value


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every body pydantic parses as an EventBatch."""
    seen: list[bytes] = []
    original = events.decode_batch

    def counting(raw: bytes) -> EventBatch:
        seen.append(raw)
        return original(raw)

    monkeypatch.setattr(consumer, "decode_batch", counting)
    return seen


def _notifier(people: People) -> tuple[RabbitBroker, list[RabbitMessage]]:
    broker = RabbitBroker()
    notifier_subscriptions.register(broker, Unused(), Unused(), Unused(), people)  # type: ignore[arg-type]
    parked: list[RabbitMessage] = []

    @broker.subscriber(NOTIFIER_QUEUE.dead_letter_queue)
    async def on_parked(message: RabbitMessage) -> None:
        parked.append(message)

    return broker, parked


async def test_the_handler_gets_the_batch_the_decoder_parsed_once(parses: list[bytes]) -> None:
    people = People()
    broker, parked = _notifier(people)
    body = encode_batch([_opt_out("1"), _opt_out("2")])
    async with TestRabbitBroker(broker) as test_broker:
        await test_broker.publish(body, queue=NOTIFIER_QUEUE.name)
    assert parses == [body]
    [batch] = people.applied
    assert [e.data.external_id for e in batch.events] == ["1", "2"]  # type: ignore[union-attr]
    assert not parked


async def test_a_body_that_does_not_parse_is_rejected_by_the_policy(parses: list[bytes]) -> None:
    people = People()
    broker, parked = _notifier(people)
    before = _rejected()
    async with TestRabbitBroker(broker) as test_broker:
        await test_broker.publish(b"not json", queue=NOTIFIER_QUEUE.name)
    assert parses == [b"not json"]
    assert _rejected() == before + 1
    assert not people.applied
    assert not parked  # rejected whole: RabbitMQ dead-letters it, with x-death


async def test_one_invalid_event_is_parked_alone_and_the_others_applied() -> None:
    people = People()
    broker, parked = _notifier(people)
    valid = json.loads(_opt_out("1").model_dump_json())
    invalid = {**json.loads(_opt_out("2").model_dump_json()), "source": "somewhere"}
    body = json.dumps({"events": [valid, invalid]}).encode()
    async with TestRabbitBroker(broker) as test_broker:
        await test_broker.publish(body, queue=NOTIFIER_QUEUE.name)
    [batch] = people.applied
    assert [str(e.message_id) for e in batch.events] == [valid["message_id"]]
    [copy] = parked
    assert copy.message_id == invalid["message_id"]
    assert copy.headers[QUEUE_HEADER] == NOTIFIER_QUEUE.name
    assert "source: literal_error" in str(copy.headers[REASON_HEADER])
    assert json.loads(copy.body) == {"events": [invalid]}


def test_the_document_knows_what_each_subscriber_declares() -> None:
    """A subscriber that takes the raw message declares no payload: the document generator
    (services/asyncapi_amqp.py) refuses it rather than document an empty one."""
    typed, raw = RabbitBroker(), RabbitBroker()
    notifier_subscriptions.register(typed, Unused(), Unused(), Unused(), People())  # type: ignore[arg-type]

    @raw.subscriber(MATCHER_QUEUE.rabbit_queue(declare=False), title="raw")
    async def on_raw(message: RabbitMessage) -> None: ...

    for broker, queue, declares_opt_outs in (
        (typed, NOTIFIER_QUEUE, True),
        (raw, MATCHER_QUEUE, False),
    ):
        document = AsyncAPI(broker, schema_version="3.0.0").to_specification().to_jsonable()
        doc = AsyncApiDocument(document)
        declared = doc.declared_event_types(doc.channel_at(queue.name))
        assert ("contact.opted_out.v1" in declared) is declares_opt_outs
