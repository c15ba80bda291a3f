"""The API documents checked into docs/: OpenAPI for each HTTP service, AsyncAPI for every event
and queue. `make docs` (`python -m services.api_docs`) writes them; tests/unit/test_api_docs.py
regenerates them in memory and fails when the checked-in files drifted.

Nothing here connects to anything: apps are built without running their lifespan, the broker is
never started, and the subscribers get stand-ins for their use cases that are never called.

What FastStream's AsyncAPI generator cannot say, and how the document is completed in code:
- A subscriber's payload comes from its handler's signature. roac's handlers take the raw message
  (decoding is the consumer policy's job: a body that does not parse is parked), so FastStream
  documents an empty payload; and a queue bound to several routing keys of a topic exchange holds
  one message schema per key. Each consumer queue's channel gets the messages of the event types
  its bindings match, the very messages their publishers' channels carry.
- Queue bindings and arguments (quorum, delivery limit, dead-lettering, TTL) are not part of the
  AMQP binding objects; they are added as `x-amqp-bindings` and `x-amqp-arguments`.
- Dead-letter queues are filled by RabbitMQ, not by an application, so no publisher declares them;
  their channels are added with the messages of the queue they park for.
- Headers other than the AMQP properties (`x-roac-reason` on parked delivery jobs and parked
  ingress messages) are added as message header schemas.
- The AMQP ingress (docs/ingress.md): integrations publish request bodies, not event batches, to
  `roac.ingress`; its channels (`contacts`, `interests`), the queue ingest consumes and its
  parking queue carry the two bodies of POST /v1/contacts and /v1/interests.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from fastapi import APIRouter, FastAPI
from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel, RootModel, create_model

from services.ingest import subscriptions as ingest_subscriptions
from services.ingest.amqp_ingress import REASON_HEADER, ROUTING_KEY_HEADER
from services.ingest.app import create_app as create_ingest_app
from services.ingest.schemas import ContactsBody, InterestsBody, InterestWithdrawalsBody
from services.matcher import subscriptions as matcher_subscriptions
from services.matcher.operator_routes import operator_api as matcher_operator_api
from services.matcher.routes import api as matcher_api
from services.notifier import subscriptions as notifier_subscriptions
from services.notifier.preferences_routes import router as preferences_router
from services.notifier.routes import api as notifier_api
from services.notifier.routes import links as notifier_links
from shared.api_keys import ApiKeyring
from shared.events import Event, EventBatch
from shared.http_app import http_app
from shared.ops import router as ops_router
from shared.settings import Settings
from shared.topology import (
    CONSUMER_QUEUES,
    DEAD_LETTER_EXCHANGE,
    DELAY_QUEUES,
    DELIVERY_QUEUE,
    EVENTS_EXCHANGE,
    INGRESS_CONTACTS,
    INGRESS_EXCHANGE,
    INGRESS_INTERESTS,
    INGRESS_QUEUE,
    INGRESS_ROUTING_KEYS,
    INGRESS_WITHDRAW_INTERESTS,
    ConsumerQueue,
)

DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
ASYNCAPI_PATH = "asyncapi.json"
# Where the document says the broker is; each deployment's is ROAC_AMQP_URL.
DOCUMENTED_AMQP_URL = "amqp://127.0.0.1:5672/"
_AMQP_BINDING_VERSION = "0.3.0"


@dataclass(frozen=True)
class EventDoc:
    producer: str
    summary: str


# Who publishes each event type and why. Every type of shared/events.py must be here (the
# drift test says which is missing).
EVENT_DOCS: dict[str, EventDoc] = {
    "contact.upserted.v1": EventDoc(
        "ingest", "A person as an integration knows them, created or updated (POST /v1/contacts)."
    ),
    "interest.declared.v1": EventDoc(
        "ingest", "A person likes, seeks or offers a topic (POST /v1/interests)."
    ),
    "interest.withdrawn.v1": EventDoc(
        "ingest",
        "A person no longer likes, seeks or offers a topic (DELETE /v1/interests/{source}/"
        "{external_id}): the matcher stops matching them on it.",
    ),
    "intro.proposed.v1": EventDoc(
        "matcher", "People who should meet, why, and how to reach them (live match or a round)."
    ),
    "resource.proposed.v1": EventDoc(
        "matcher", "A resource (an article, an event, a job post) brought to one interested person."
    ),
    "delivery.succeeded.v1": EventDoc(
        "notifier", "An ask, introduction or resource reached its recipient on a channel."
    ),
    "delivery.failed.v1": EventDoc(
        "notifier", "A message could not be delivered on any of the recipient's channels."
    ),
    "contact.opted_out.v1": EventDoc(
        "notifier",
        "A person unsubscribed (a signed link; or ingest, POST /v1/contacts/.../opt-out): "
        "no more introductions for them.",
    ),
    "contact.preferences_changed.v1": EventDoc(
        "notifier",
        "A person changed their own preferences on their preferences page (pause, weekly cap, "
        "language, opting back in): only the fields named in `changed` are meant.",
    ),
    "intro.feedback_given.v1": EventDoc(
        "notifier",
        "A participant answered their check-in ('did you meet?': met, didn't happen, not for "
        "me), or rated a meeting: the matcher's feedback (meetings raise a topic's weight, "
        "'not for me' means never this group again).",
    ),
    "contact.erased.v1": EventDoc(
        "ingest",
        "Erase a person everywhere (DELETE /v1/contacts/{source}/{external_id}): personal data "
        "scrubbed, nothing more sent to or about them.",
    ),
    "contact.merged.v1": EventDoc(
        "matcher",
        "Identity resolution found identities of one person (same email, or same chat handle on "
        "one platform) and merged their contacts: the person is never introduced to themselves.",
    ),
    "contact.unmerged.v1": EventDoc(
        "matcher",
        "An operator undid a merge (`roac contacts unmerge`): two people again, never merged "
        "automatically again.",
    ),
    "delivery.requested.v1": EventDoc(
        "notifier", "The notifier's own work item: attempt one delivery now."
    ),
}


class ContactsIngress(RootModel[ContactsBody]):
    """One person, or `{"items": [...]}` of up to 1,000: the body of POST /v1/contacts."""


class InterestsIngress(RootModel[InterestsBody]):
    """One interest, or `{"items": [...]}` of up to 1,000: the body of POST /v1/interests."""


class InterestWithdrawalsIngress(RootModel[InterestWithdrawalsBody]):
    """One interest to withdraw, or `{"items": [...]}` of up to 1,000: what
    DELETE /v1/interests/{source}/{external_id}?topic=&kind= does, item by item."""


# What an integration publishes to roac.ingress, by routing key.
INGRESS_BODIES: dict[str, type[BaseModel]] = {
    INGRESS_CONTACTS: ContactsIngress,
    INGRESS_INTERESTS: InterestsIngress,
    INGRESS_WITHDRAW_INTERESTS: InterestWithdrawalsIngress,
}
# The HTTP request each routing key stands for.
_INGRESS_REQUESTS = {
    INGRESS_CONTACTS: "POST /v1/contacts",
    INGRESS_INTERESTS: "POST /v1/interests",
    INGRESS_WITHDRAW_INTERESTS: "DELETE /v1/interests/... (one per item)",
}
_INGRESS_HEADERS = {
    "type": "object",
    "properties": {
        REASON_HEADER: {
            "type": "string",
            "maxLength": 2000,
            "description": "Why ingest parked it: field locations and error types, never values.",
        },
        ROUTING_KEY_HEADER: {"type": "string", "description": "The routing key it came with."},
    },
}


def event_classes() -> dict[str, type[BaseModel]]:
    """Every event model of shared/events.py by its type."""
    union = get_args(Event)[0]
    classes: tuple[type[BaseModel], ...] = get_args(union)
    return {cls.model_fields["type"].default: cls for cls in classes}


def batch_model(event: type[BaseModel]) -> type[BaseModel]:
    """The body of one AMQP message holding events of this type: an EventBatch narrowed to it."""
    events: Any = list[event]  # type: ignore[valid-type]
    model: type[BaseModel] = create_model(
        f"{event.__name__}Batch",
        __doc__=EventBatch.__doc__,
        events=(events, EventBatch.model_fields["events"]),
    )
    return model


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


# --- OpenAPI ----------------------------------------------------------------------------------


@asynccontextmanager
async def _no_lifespan(_app: FastAPI) -> Any:
    yield


def _bare_app(title: str, routers: Iterable[APIRouter]) -> FastAPI:
    # As shared/runtime.py's consumer_app mounts them; the titles are services/*/app.py's.
    app = http_app(title=title)
    app.include_router(ops_router)
    for router in routers:
        app.include_router(router)
    return app


def openapi_documents() -> dict[str, dict[str, Any]]:
    """OpenAPI per HTTP service, by path under docs/. Ingest's is its real app; the matcher's and
    the notifier's apps are built by functions that open pools and brokers, so their routers are
    mounted as theirs are, on an app of their own."""
    settings = Settings.model_construct()  # defaults: the documents never depend on the shell
    ingest = create_ingest_app(settings, _no_lifespan, ApiKeyring({}))
    matcher = _bare_app("roac matcher", [matcher_api, matcher_operator_api])
    notifier = _bare_app("roac notifier", [notifier_api])
    # The public port serves the link pages and nothing else (no document of its own there).
    links = http_app(title="roac notifier: public link pages")
    links.include_router(notifier_links)
    links.include_router(preferences_router)
    return {
        "openapi/ingest.json": ingest.openapi(),
        "openapi/matcher.json": matcher.openapi(),
        "openapi/notifier.json": notifier.openapi(),
        "openapi/notifier-links.json": links.openapi(),
    }


# --- AsyncAPI ---------------------------------------------------------------------------------


class _NeverCalled:
    """Stands in for a use case while subscribers are declared; nothing is consumed."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Callable[..., Any]:
        def refuse(*_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError(f"{self._name}.{attribute} called while generating documents")

        return refuse


def _subscribe(register: Callable[..., None], broker: RabbitBroker) -> None:
    """Call a service's `register(broker, use case, ...)` with stand-ins for its use cases."""
    use_cases = list(inspect.signature(register).parameters)[1:]
    register(broker, *(_NeverCalled(name) for name in use_cases))


def _documented_broker() -> RabbitBroker:
    broker = RabbitBroker(DOCUMENTED_AMQP_URL)
    _subscribe(matcher_subscriptions.register, broker)
    _subscribe(notifier_subscriptions.register, broker)
    _subscribe(ingest_subscriptions.register, broker)
    classes = event_classes()
    missing = sorted(set(classes) - set(EVENT_DOCS))
    if missing:
        raise LookupError(f"describe {', '.join(missing)} in EVENT_DOCS of {__name__}")
    for event_type, cls in classes.items():
        doc = EVENT_DOCS[event_type]
        broker.publisher(
            exchange=EVENTS_EXCHANGE,
            routing_key=event_type,
            persist=True,
            title=event_type,
            description=f"{doc.summary} Published by {doc.producer}.",
            schema=batch_model(cls),
            message_type=event_type,
        )
    job = batch_model(classes["delivery.requested.v1"])
    for delay in DELAY_QUEUES:
        broker.publisher(
            exchange="",
            routing_key=delay.name,
            persist=True,
            title=delay.name,
            description=(
                f"A delivery job to attempt later (a retry, or after quiet hours). It waits "
                f"{delay.seconds} s, then RabbitMQ dead-letters it into {DELIVERY_QUEUE.name}. "
                "Published by notifier."
            ),
            schema=job,
            message_type="delivery.requested.v1",
        )
    broker.publisher(
        exchange="",
        routing_key=DELIVERY_QUEUE.dead_letter_queue,
        persist=True,
        title=DELIVERY_QUEUE.dead_letter_queue,
        description=(
            "A delivery job out of attempts, parked with the reason in `x-roac-reason` "
            "(`roac deliveries retry` replays them). Published by notifier."
        ),
        schema=job,
        message_type="delivery.requested.v1",
    )
    for routing_key, body in INGRESS_BODIES.items():
        broker.publisher(
            exchange=INGRESS_EXCHANGE,
            routing_key=routing_key,
            persist=True,
            title=f"{INGRESS_EXCHANGE.name}/{routing_key}",
            description=(
                f"What {_INGRESS_REQUESTS[routing_key]} takes, published to "
                f"{INGRESS_EXCHANGE.name} by an "
                "integration that prefers the broker (docs/ingress.md); `message_id` required "
                "(event ids derive from it), `user_id` names the integration. Consumed by ingest "
                f"from {INGRESS_QUEUE.name}."
            ),
            schema=body,
        )
    return broker


def asyncapi_document() -> dict[str, Any]:
    spec = AsyncAPI(
        _documented_broker(),
        title="roac events",
        version="1",
        description=(
            "Every event and queue of roac (shared/events.py, shared/topology.py). An AMQP "
            'message body is `{"events": [envelope, ...]}`: one or more events of one type; the '
            "routing key and the AMQP `type` property are that type; content-type "
            "application/json; persistent. Producers publish to the topic exchange "
            f"`{EVENTS_EXCHANGE.name}` with confirms and `mandatory`. Consumers deduplicate on "
            "each envelope's `message_id`. The server is each deployment's ROAC_AMQP_URL."
        ),
        schema_version="3.0.0",
    ).to_specification()
    document: dict[str, Any] = spec.to_jsonable()
    _complete(document, list(event_classes()))
    return document


def _queue_binding(name: str) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "queue",
            "bindingVersion": _AMQP_BINDING_VERSION,
            "queue": {
                "name": name,
                "durable": True,
                "exclusive": False,
                "autoDelete": False,
                "vhost": "/",
            },
        }
    }


def _component(reference: dict[str, str]) -> str:
    return reference["$ref"].rsplit("/", 1)[1]


class _Document:
    """The generated AsyncAPI document, edited in place."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.channels: dict[str, Any] = document["channels"]
        self.operations: dict[str, Any] = document["operations"]
        self.messages: dict[str, Any] = document["components"]["messages"]

    def channel_at(self, address: str) -> str | None:
        for key, channel in self.channels.items():
            if channel["address"] == address:
                return key
        return None

    def event_messages(self, event_types: Iterable[str]) -> dict[str, dict[str, str]]:
        """The message each event type's publisher declared, named after the type and carrying
        it as the AMQP `type` property."""
        found = {}
        for event_type in event_types:
            key = self.channel_at(event_type)
            if key is None:
                raise LookupError(f"no publisher channel for {event_type}")
            (reference,) = self.channels[key]["messages"].values()
            self.name_message(_component(reference), event_type)
            found[event_type] = dict(reference)
        return found

    def name_message(self, component: str, event_type: str) -> None:
        message = self.messages[component]
        message["name"] = event_type
        message["bindings"] = {
            "amqp": {"messageType": event_type, "bindingVersion": _AMQP_BINDING_VERSION}
        }

    def carry(self, key: str, messages: dict[str, dict[str, str]]) -> None:
        """The channel carries these messages, and so do the operations on it."""
        self.channels[key]["messages"] = messages
        for operation in self.operations.values():
            if operation["channel"]["$ref"] == f"#/channels/{key}":
                operation["messages"] = [
                    {"$ref": f"#/channels/{key}/messages/{name}"} for name in messages
                ]

    def queue(self, key: str, arguments: dict[str, Any], bindings: list[dict[str, str]]) -> None:
        channel = self.channels[key]
        channel["bindings"] = _queue_binding(channel["address"])
        if bindings:
            channel["x-amqp-bindings"] = bindings
        channel["x-amqp-arguments"] = arguments

    def drop_unreferenced(self) -> None:
        """Components nothing refers to any more (the handlers' empty payloads)."""
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


def _complete(document: dict[str, Any], event_types: list[str]) -> None:
    """Fill in what the generator cannot express (see the module's docstring)."""
    doc = _Document(document)
    event_message = doc.event_messages(event_types)

    for queue in CONSUMER_QUEUES:
        key = doc.channel_at(queue.name)
        if key is None:
            raise LookupError(f"no subscriber consumes {queue.name}")
        doc.carry(key, {t: event_message[t] for t in bound_types(queue, event_types)})
        channel = doc.channels[key]
        channel["description"] = (
            f"{channel.get('description', '')} Bound to {EVENTS_EXCHANGE.name} with "
            f"{', '.join(queue.bindings)}; parks in {queue.dead_letter_queue}."
        ).strip()
        doc.queue(
            key,
            dict(queue.arguments()),
            [{"exchange": EVENTS_EXCHANGE.name, "routingKey": b} for b in queue.bindings],
        )

        parked = doc.channel_at(queue.dead_letter_queue)
        parked_text = (
            f"Parking queue of {queue.name}: messages its consumer rejected, or delivered "
            f"{queue.arguments()['x-delivery-limit']} times, dead-lettered by RabbitMQ through "
            f"{DEAD_LETTER_EXCHANGE.name} (routing key {queue.name}); the `x-death` header says "
            "why. Nothing consumes it: they wait for an operator."
        )
        if parked is None:
            parked = queue.dead_letter_queue
            doc.channels[parked] = {
                "address": parked,
                "description": parked_text,
                "servers": channel["servers"],
                "messages": dict(channel["messages"]),
            }
        else:
            # The notifier parks delivery jobs itself too, with the reason in a header.
            published = doc.channels[parked]
            published["description"] = f"{parked_text} {published.get('description', '')}".strip()
            (reference,) = published["messages"].values()
            doc.name_message(_component(reference), "delivery.requested.v1")
            doc.messages[_component(reference)]["headers"] = {
                "type": "object",
                "properties": {"x-roac-reason": {"type": "string", "maxLength": 200}},
            }
            doc.carry(parked, {"delivery.requested.v1": dict(reference)})
        doc.queue(
            parked,
            {"x-queue-type": "quorum"},
            [{"exchange": DEAD_LETTER_EXCHANGE.name, "routingKey": queue.name}],
        )

    for delay in DELAY_QUEUES:
        key = doc.channel_at(delay.name)
        if key is None:
            raise LookupError(f"no publisher for {delay.name}")
        doc.carry(key, {"delivery.requested.v1": event_message["delivery.requested.v1"]})
        doc.queue(key, dict(delay.arguments()), [])

    _complete_ingress(doc)
    doc.drop_unreferenced()
    _put_in_order(document, event_types)


def _complete_ingress(doc: _Document) -> None:
    """The ingress queue carries the request bodies; its parking queue (filled by ingest,
    and by RabbitMQ's dead-lettering) the same, with the reason in a header."""
    bodies: dict[str, dict[str, str]] = {}
    for routing_key in INGRESS_ROUTING_KEYS:
        key = doc.channel_at(routing_key)
        if key is None:
            raise LookupError(f"no publisher for {INGRESS_EXCHANGE.name} {routing_key}")
        (reference,) = doc.channels[key]["messages"].values()
        message = doc.messages[_component(reference)]
        message["name"] = f"ingress.{routing_key}"
        message["contentType"] = "application/json"
        bodies[routing_key] = dict(reference)
    queue = doc.channel_at(INGRESS_QUEUE.name)
    if queue is None:
        raise LookupError(f"no subscriber consumes {INGRESS_QUEUE.name}")
    doc.carry(queue, bodies)
    doc.channels[queue]["description"] = (
        f"{doc.channels[queue].get('description', '')} Bound to {INGRESS_EXCHANGE.name} with "
        f"{', '.join(INGRESS_QUEUE.bindings)} (an unknown routing key is parked with a reason); "
        f"parks in {INGRESS_QUEUE.dead_letter_queue}."
    ).strip()
    doc.queue(
        queue,
        dict(INGRESS_QUEUE.arguments()),
        [{"exchange": INGRESS_EXCHANGE.name, "routingKey": b} for b in INGRESS_QUEUE.bindings],
    )
    parked = INGRESS_QUEUE.dead_letter_queue
    parked_messages = {}
    for routing_key, reference in bodies.items():
        # A copy of each body's message: the same payload, plus the parking headers.
        component = f"{_component(reference)}:parked"
        doc.messages[component] = {
            **doc.messages[_component(reference)],
            "title": f"{parked}/{routing_key}",
            "name": f"ingress.{routing_key}.parked",
            "headers": _INGRESS_HEADERS,
        }
        parked_messages[f"{routing_key}.parked"] = {"$ref": f"#/components/messages/{component}"}
    doc.channels[parked] = {
        "address": parked,
        "description": (
            f"Parking queue of {INGRESS_QUEUE.name}. Ingest publishes here (default exchange) "
            "the original body of every message that failed validation, as it came (it may not "
            f"even be JSON), with `{REASON_HEADER}` (why) and `{ROUTING_KEY_HEADER}`, and its "
            "message_id; it publishes nothing to roac.events for it. RabbitMQ dead-letters here "
            f"through {DEAD_LETTER_EXCHANGE.name} (routing key {INGRESS_QUEUE.name}) what ingest "
            f"rejected or what was delivered {INGRESS_QUEUE.arguments()['x-delivery-limit']} "
            "times, with `x-death`. Nothing consumes it: they wait for an operator."
        ),
        "servers": doc.channels[queue]["servers"],
        "messages": parked_messages,
    }
    doc.queue(
        parked,
        {"x-queue-type": "quorum"},
        [{"exchange": DEAD_LETTER_EXCHANGE.name, "routingKey": INGRESS_QUEUE.name}],
    )


def _put_in_order(document: dict[str, Any], event_types: list[str]) -> None:
    """FastStream keeps publishers in a WeakSet, so its order changes from run to run: channels
    and operations follow the events, then each consumer queue with its parking queue, then the
    delay queues; components go alphabetically."""
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


# --- Files ------------------------------------------------------------------------------------


def rendered() -> dict[str, str]:
    """Every document as its file's text, by path under docs/."""
    documents = {**openapi_documents(), ASYNCAPI_PATH: asyncapi_document()}
    return {
        path: json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        for path, document in documents.items()
    }


def stale(root: Path = DOCS_DIR) -> list[str]:
    """Paths under `root` whose content is not what the code generates now."""
    return [
        path
        for path, text in rendered().items()
        if not (root / path).is_file() or (root / path).read_text("utf-8") != text
    ]


def write(root: Path = DOCS_DIR) -> list[Path]:
    written = []
    for path, text in rendered().items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")
        written.append(target)
    return written


def main() -> None:
    for target in write():
        sys.stdout.write(f"wrote {target.relative_to(DOCS_DIR.parent)}\n")


if __name__ == "__main__":
    main()
