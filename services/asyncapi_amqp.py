"""What FastStream's AsyncAPI generator cannot say about roac's RabbitMQ topology, added to the
document it generated (services/api_docs.py declares the broker it is generated from).

FastStream documents each subscriber (its queue, and the payload its handler declares: an
`EventBatch`), each publisher (its exchange, routing key and payload) and their AMQP bindings.
What it cannot express, and is added here:
- One queue, several messages: a queue bound to several routing keys of a topic exchange gets
  one message per event type its bindings match (the very messages the publishers' channels
  carry, narrowed from the subscriber's `EventBatch`); FastStream gives a subscriber one message.
- Queue arguments (quorum, delivery limit, dead-lettering, TTL) and the bindings themselves,
  which the AMQP binding objects have no field for: `x-amqp-arguments`, `x-amqp-bindings`.
- Dead-letter queues: filled by RabbitMQ and by the consumers' parking policy
  (shared/consumer.py), consumed by nobody, so no subscriber declares them; each gets a channel
  with the messages of the queue it parks for, and their header schemas (`x-roac-reason`,
  `x-roac-queue`).
- The AMQP ingress queue (docs/ingress.md), whose body depends on the routing key and which
  ingest validates itself, by routing key: it carries the request bodies its publishers declare.
- A stable order: FastStream keeps publishers in a WeakSet, so its order changes between runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from services.ingest.amqp_ingress import MAX_REASON_LENGTH as INGRESS_MAX_REASON_LENGTH
from shared.consumer import MAX_REASON_LENGTH
from shared.topology import (
    CONSUMER_QUEUES,
    DEAD_LETTER_EXCHANGE,
    DELAY_QUEUES,
    EVENTS_EXCHANGE,
    INGRESS_EXCHANGE,
    INGRESS_QUEUE,
    INGRESS_ROUTING_KEYS,
    QUEUE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    ConsumerQueue,
)

_AMQP_BINDING_VERSION = "0.3.0"
_DELIVERY_JOB = "delivery.requested.v1"

PARKED_EVENT_HEADERS = {
    "type": "object",
    "properties": {
        REASON_HEADER: {
            "type": "string",
            "maxLength": MAX_REASON_LENGTH,
            "description": "Why it was parked, when roac parked it (not RabbitMQ): error class, "
            "SQLSTATE, table and constraint, or the schema's field locations; never a value.",
        },
        QUEUE_HEADER: {
            "type": "string",
            "description": "The queue its consumer took it from (`roac dlq replay` sends it "
            "back there).",
        },
    },
}
PARKED_INGRESS_HEADERS = {
    "type": "object",
    "properties": {
        REASON_HEADER: {
            "type": "string",
            "maxLength": INGRESS_MAX_REASON_LENGTH,
            "description": "Why ingest parked it: field locations and error types, never values.",
        },
        ROUTING_KEY_HEADER: {"type": "string", "description": "The routing key it came with."},
    },
}


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split("."))


def bound_types(queue: ConsumerQueue, event_types: Iterable[str]) -> list[str]:
    return [t for t in event_types if any(topic_matches(b, t) for b in queue.bindings)]


def _component(reference: dict[str, str]) -> str:
    return reference["$ref"].rsplit("/", 1)[1]


class AsyncApiDocument:
    """A generated AsyncAPI 3.0 document, edited in place."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.channels: dict[str, Any] = document["channels"]
        self.operations: dict[str, Any] = document["operations"]
        self.messages: dict[str, Any] = document["components"]["messages"]
        self.schemas: dict[str, Any] = document["components"]["schemas"]

    def channel_at(self, address: str) -> str:
        for key, channel in self.channels.items():
            if channel["address"] == address:
                return key
        raise LookupError(f"nothing in the broker declared documents {address}")

    def event_messages(self, event_types: Iterable[str]) -> dict[str, dict[str, str]]:
        """The message each event type's publisher declared, named after the type and carrying
        it as the AMQP `type` property."""
        found = {}
        for event_type in event_types:
            (reference,) = self.channels[self.channel_at(event_type)]["messages"].values()
            message = self.messages[_component(reference)]
            message["name"] = event_type
            message["bindings"] = {
                "amqp": {"messageType": event_type, "bindingVersion": _AMQP_BINDING_VERSION}
            }
            found[event_type] = dict(reference)
        return found

    def declared_event_types(self, key: str) -> set[str]:
        """The event types the payload a subscriber's handler declared can hold (an
        `EventBatch`: `{"events": [...]}` of any of them)."""
        (reference,) = self.channels[key]["messages"].values()
        payload = self.messages[_component(reference)]["payload"]
        schema = self.schemas.get(_component(payload)) if "$ref" in payload else None
        items = (schema or {}).get("properties", {}).get("events", {}).get("items", {})
        events = items.get("oneOf", [items]) if items else []
        declared = set()
        for event in events:
            constant = self.schemas[_component(event)]["properties"]["type"].get("const")
            declared.add(constant)
        return declared

    def carry(self, key: str, messages: dict[str, dict[str, str]]) -> None:
        """The channel carries these messages, and so do the operations on it."""
        self.channels[key]["messages"] = messages
        for operation in self.operations.values():
            if operation["channel"]["$ref"] == f"#/channels/{key}":
                operation["messages"] = [
                    {"$ref": f"#/channels/{key}/messages/{name}"} for name in messages
                ]

    def parked_copies(
        self, messages: dict[str, dict[str, str]], headers: dict[str, Any]
    ) -> dict[str, dict[str, str]]:
        """A copy of each message as a parking queue holds it: the same payload, with the
        parking headers."""
        copies = {}
        for name, reference in messages.items():
            component = f"{_component(reference)}:parked"
            original = self.messages[_component(reference)]
            self.messages[component] = {
                **{key: value for key, value in original.items() if key != "title"},
                "title": f"{original['title']}:parked",
                "name": f"{original.get('name', name)}.parked",
                "headers": headers,
            }
            copies[f"{name}.parked"] = {"$ref": f"#/components/messages/{component}"}
        return copies

    def queue(
        self,
        key: str,
        arguments: dict[str, Any],
        exchange: str,
        routing_keys: Iterable[str],
    ) -> None:
        channel = self.channels[key]
        channel["bindings"] = {
            "amqp": {
                "is": "queue",
                "bindingVersion": _AMQP_BINDING_VERSION,
                "queue": {
                    "name": channel["address"],
                    "durable": True,
                    "exclusive": False,
                    "autoDelete": False,
                    "vhost": "/",
                },
            }
        }
        bindings = [{"exchange": exchange, "routingKey": key} for key in routing_keys]
        if bindings:
            channel["x-amqp-bindings"] = bindings
        channel["x-amqp-arguments"] = arguments

    def parking_queue(
        self, name: str, of: str, text: str, messages: dict[str, dict[str, str]]
    ) -> None:
        """The dead-letter queue `name` of the queue `of`, declared by its publisher (the
        consumer that parks there): described as a parking queue, with `messages`."""
        key = self.channel_at(name)
        published = self.channels[key]
        published["description"] = f"{text} {published.get('description', '')}".strip()
        self.carry(key, messages)
        self.queue(key, {"x-queue-type": "quorum"}, DEAD_LETTER_EXCHANGE.name, [of])

    def drop_unreferenced(self) -> None:
        """Components nothing refers to any more (the subscribers' messages, replaced by one
        message per event type; the publishers' messages to a parking queue, by parked
        copies)."""
        components: dict[str, dict[str, Any]] = self.document["components"]
        while True:
            text = json.dumps(self.document)
            unused = [
                (part, name)
                for part, entries in components.items()
                for name in entries
                if f'"#/components/{part}/{name}"' not in text
            ]
            if not unused:
                return
            for part, name in unused:
                del components[part][name]


def complete(document: dict[str, Any], event_types: list[str]) -> None:
    """Add to FastStream's document what it cannot express (see the module's docstring)."""
    doc = AsyncApiDocument(document)
    event_message = doc.event_messages(event_types)

    for queue in CONSUMER_QUEUES:
        key = doc.channel_at(queue.name)
        carried = bound_types(queue, event_types)
        undeclared = sorted(set(carried) - doc.declared_event_types(key))
        if undeclared:
            raise LookupError(
                f"the subscriber of {queue.name} declares no payload holding {undeclared}: its "
                "handler takes `batch: DecodedBatch` (shared/consumer.py)"
            )
        messages = {t: event_message[t] for t in carried}
        doc.carry(key, messages)
        channel = doc.channels[key]
        channel["description"] = (
            f"{channel.get('description', '')} Bound to {EVENTS_EXCHANGE.name} with "
            f"{', '.join(queue.bindings)}; parks in {queue.dead_letter_queue}."
        ).strip()
        doc.queue(key, dict(queue.arguments()), EVENTS_EXCHANGE.name, queue.bindings)
        doc.parking_queue(
            queue.dead_letter_queue,
            of=queue.name,
            text=(
                f"Parking queue of {queue.name}. Its consumer parks here, each alone with "
                f"`{REASON_HEADER}` and `{QUEUE_HEADER}`, the events of a message it cannot "
                f"apply; RabbitMQ dead-letters here through {DEAD_LETTER_EXCHANGE.name} "
                f"(routing key {queue.name}) the messages the consumer rejected or that were "
                f"delivered {queue.arguments()['x-delivery-limit']} times, with `x-death`. "
                "Nothing consumes it: they wait for an operator (`roac dlq`)."
            ),
            messages=doc.parked_copies(messages, PARKED_EVENT_HEADERS),
        )

    for delay in DELAY_QUEUES:
        key = doc.channel_at(delay.name)
        doc.carry(key, {_DELIVERY_JOB: event_message[_DELIVERY_JOB]})
        doc.queue(key, dict(delay.arguments()), "", [])

    _complete_ingress(doc)
    doc.drop_unreferenced()
    put_in_order(document, event_types)


def _complete_ingress(doc: AsyncApiDocument) -> None:
    """The ingress queue carries the request bodies its publishers declare, by routing key; its
    parking queue (filled by ingest, and by RabbitMQ's dead-lettering) the same, with the
    reason in a header."""
    bodies: dict[str, dict[str, str]] = {}
    for routing_key in INGRESS_ROUTING_KEYS:
        (reference,) = doc.channels[doc.channel_at(routing_key)]["messages"].values()
        message = doc.messages[_component(reference)]
        message["name"] = f"ingress.{routing_key}"
        message["contentType"] = "application/json"
        bodies[routing_key] = dict(reference)
    queue = doc.channel_at(INGRESS_QUEUE.name)
    doc.carry(queue, bodies)
    doc.channels[queue]["description"] = (
        f"{doc.channels[queue].get('description', '')} Bound to {INGRESS_EXCHANGE.name} with "
        f"{', '.join(INGRESS_QUEUE.bindings)} (an unknown routing key is parked with a reason); "
        f"parks in {INGRESS_QUEUE.dead_letter_queue}."
    ).strip()
    doc.queue(queue, dict(INGRESS_QUEUE.arguments()), INGRESS_EXCHANGE.name, INGRESS_QUEUE.bindings)
    doc.parking_queue(
        INGRESS_QUEUE.dead_letter_queue,
        of=INGRESS_QUEUE.name,
        text=(
            f"Parking queue of {INGRESS_QUEUE.name}. Ingest publishes here (default exchange) "
            "the original body of every message that failed validation, as it came (it may not "
            f"even be JSON), with `{REASON_HEADER}` (why) and `{ROUTING_KEY_HEADER}`, and "
            "its message_id; it publishes nothing to roac.events for it. RabbitMQ dead-letters "
            f"here through {DEAD_LETTER_EXCHANGE.name} (routing key {INGRESS_QUEUE.name}) what "
            "ingest rejected or what was delivered "
            f"{INGRESS_QUEUE.arguments()['x-delivery-limit']} times, with `x-death`. Nothing "
            "consumes it: they wait for an operator."
        ),
        messages=doc.parked_copies(bodies, PARKED_INGRESS_HEADERS),
    )


def put_in_order(document: dict[str, Any], event_types: list[str]) -> None:
    """Channels and operations follow the events, then each consumer queue with its parking
    queue, then the ingress, then the delay queues; components go alphabetically."""
    addresses = [*event_types]
    for queue in CONSUMER_QUEUES:
        addresses += [queue.name, queue.dead_letter_queue]
    addresses += [*INGRESS_ROUTING_KEYS, INGRESS_QUEUE.name, INGRESS_QUEUE.dead_letter_queue]
    addresses += [delay.name for delay in DELAY_QUEUES]
    rank = {address: i for i, address in enumerate(addresses)}
    channels: dict[str, Any] = document["channels"]

    def channel_rank(key: str) -> tuple[int, str]:
        address = channels[key]["address"]
        return rank.get(address, len(rank)), address

    order = sorted(channels, key=channel_rank)
    document["channels"] = {key: channels[key] for key in order}
    position = {f"#/channels/{key}": i for i, key in enumerate(order)}
    operations: dict[str, Any] = document["operations"]
    document["operations"] = dict(
        sorted(operations.items(), key=lambda kv: (position[kv[1]["channel"]["$ref"]], kv[0]))
    )
    components: dict[str, Any] = document["components"]
    for part in ("messages", "schemas"):
        components[part] = dict(sorted(components[part].items()))
