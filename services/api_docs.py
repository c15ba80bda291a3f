"""The API documents checked into docs/: OpenAPI for each HTTP service, AsyncAPI for every event
and queue. `make docs` (`python -m services.api_docs`) writes them; tests/unit/test_api_docs.py
regenerates them in memory and fails when the checked-in files drifted.

Nothing here connects to anything: apps are built without running their lifespan, the broker is
never started, and the subscribers get stand-ins for their use cases that are never called.

The AsyncAPI document is FastStream's, generated from a broker declared as the services declare
theirs: their own subscribers (each handler declares the `EventBatch` it takes, so FastStream
documents the event schemas), plus a publisher per event type, delay queue and ingress routing
key with its payload model (roac publishes through its outbox relay, which FastStream does not
see). services/asyncapi_amqp.py then adds what FastStream cannot express: one message per event
type on a queue bound to several, queue arguments and bindings, the dead-letter queues and their
headers. docs/architecture.md ("How the AsyncAPI document is made") says why, with numbers.
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

from services.asyncapi_amqp import bound_types, complete, topic_matches
from services.ingest import subscriptions as ingest_subscriptions
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
    DELAY_QUEUES,
    DELIVERY_QUEUE,
    EVENTS_EXCHANGE,
    INGRESS_CONTACTS,
    INGRESS_EXCHANGE,
    INGRESS_INTERESTS,
    INGRESS_QUEUE,
    INGRESS_WITHDRAW_INTERESTS,
    MATCHER_QUEUE,
    NOTIFIER_QUEUE,
    ConsumerQueue,
)

__all__ = ["EVENT_DOCS", "bound_types", "rendered", "stale", "topic_matches", "write"]

DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
ASYNCAPI_PATH = "asyncapi.json"
# Where the document says the broker is; each deployment's is ROAC_AMQP_URL.
DOCUMENTED_AMQP_URL = "amqp://127.0.0.1:5672/"


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
        "A person changed their own preferences on their preferences page (pause, weekly or "
        "monthly cap, channel order, language, opting back in), or someone did on their behalf "
        "(ingest, POST /v1/contacts/.../preferences: pause, caps, language): only the fields "
        "named in `changed` are meant. Interests changed on the page are ordinary interest "
        "events.",
    ),
    "intro.feedback_given.v1": EventDoc(
        "notifier",
        "A participant answered their check-in ('did you meet?': met, didn't happen, not for "
        "me), or rated a meeting: the matcher's feedback (meetings raise a topic's weight, "
        "'not for me' means never this group again).",
    ),
    "contact.erased.v1": EventDoc(
        "ingest, matcher",
        "Erase a person everywhere (DELETE /v1/contacts/{source}/{external_id}): personal data "
        "scrubbed, nothing more sent to or about them. The matcher publishes it again for each "
        "other identity of a merged person it erased, so that the notifier erases those too.",
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


# Who parks in each consumer queue's dead-letter queue, and what else it parks there.
PARKERS: dict[ConsumerQueue, str] = {
    MATCHER_QUEUE: "matcher",
    NOTIFIER_QUEUE: "notifier",
    DELIVERY_QUEUE: "notifier",
    INGRESS_QUEUE: "ingest",
}
PARKING_NOTES = {
    DELIVERY_QUEUE.name: "The notifier also parks here a delivery job out of attempts, with the "
    "reason in `x-roac-reason` (`roac deliveries retry` replays them).",
}

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
    parameters = list(inspect.signature(register).parameters.values())[1:]
    positional = [p.name for p in parameters if p.kind is not p.KEYWORD_ONLY]
    keywords = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY]
    register(
        broker,
        *(_NeverCalled(name) for name in positional),
        **{name: _NeverCalled(name) for name in keywords},
    )


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
    for queue, parker in PARKERS.items():
        # The consumers' parking policy publishes each event it cannot apply to the queue's
        # dead-letter queue (shared/consumer.py; ingest: the ingress message it refused).
        broker.publisher(
            exchange="",
            routing_key=queue.dead_letter_queue,
            persist=True,
            title=queue.dead_letter_queue,
            description=f"{PARKING_NOTES.get(queue.name, '')} Published by {parker}.".strip(),
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
    complete(document, list(event_classes()))
    return document


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
