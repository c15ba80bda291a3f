"""The AMQP ingress (docs/ingress.md): what ingest does with a message an integration published to
`roac.ingress`, as plain Python.

A message is judged exactly like the HTTP request with the same body: the same pydantic types
(`ContactsBody`, `InterestsBody`; `InterestWithdrawalsBody` for what DELETE /v1/interests/...
does), the same batch and string limits, the same body size limit.

- Valid: its events go through the same `Intake` as HTTP (one confirmed message on roac.events);
  the caller acks the ingress message only after that. Event ids derive from the message's AMQP
  `message_id` (required), so a redelivered message publishes the same ids and consumers
  deduplicate it.
- Invalid: the original body is parked, confirmed, in roac.ingest.ingress.dlq with a readable
  reason (field locations and error types, never input values: they may be personal data);
  nothing reaches roac.events.
- RabbitMQ did not confirm (either of the above): requeued after a pause, like every consumer
  (shared/consumer.py); the queue's delivery limit parks a message that never succeeds.

A hostile body is invalid like any other, never a crash or a redelivery loop: control and
bidirectional formatting characters in a string field are refused by the schemas
(shared/text_safety.py); JSON nested too deep for the parser (RecursionError) or holding an
integer too long for Python to read (ValueError: over `sys.get_int_max_str_digits()` digits)
is parked with its own reason; and refused characters in a reason (an unknown field's name is
the sender's text) are written as `\\uXXXX`, so the header stays readable and encodable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from services.ingest.batch_triage import triage
from services.ingest.metrics import INGRESS_MESSAGES
from services.ingest.publishing import (
    Intake,
    Keyed,
    Origin,
    Publisher,
    PublishFailed,
    correlation_id_from,
)
from services.ingest.schemas import (
    ContactBatch,
    ContactsBody,
    InterestBatch,
    InterestsBody,
    InterestWithdrawalBatch,
    InterestWithdrawalsBody,
)
from shared.consumer import TRANSIENT_ERRORS
from shared.events import ContactData, InterestData, InterestWithdrawalData
from shared.problems import field_problems
from shared.redelivery import requeue_delay
from shared.scopes import Grant, Scope
from shared.text_safety import escaped, first_unsafe
from shared.topology import (
    INGRESS_CONTACTS,
    INGRESS_INTERESTS,
    INGRESS_ROUTING_KEYS,
    INGRESS_WITHDRAW_INTERESTS,
    SENDER_HEADER,
)

log = logging.getLogger("roac.ingest.ingress")

# Without a user_id property (which RabbitMQ checks against the connection's user), events
# carry this as their integration.
DEFAULT_INTEGRATION = "amqp"
BULK_HEADER = "x-roac-bulk"
# A reason names at most this many fields and stays this short: it travels in an AMQP header.
MAX_REASON_FIELDS = 20
MAX_REASON_LENGTH = 2000

_CONTACTS: TypeAdapter[Any] = TypeAdapter(ContactsBody)
_INTERESTS: TypeAdapter[Any] = TypeAdapter(InterestsBody)
_WITHDRAWALS: TypeAdapter[Any] = TypeAdapter(InterestWithdrawalsBody)
_BODIES: dict[str, TypeAdapter[Any]] = {
    INGRESS_CONTACTS: _CONTACTS,
    INGRESS_INTERESTS: _INTERESTS,
    INGRESS_WITHDRAW_INTERESTS: _WITHDRAWALS,
}


@dataclass(frozen=True)
class IngressMessage:
    """What ingest reads from an AMQP message of the ingress queue."""

    body: bytes
    routing_key: str
    message_id: str | None = None
    user_id: str | None = None
    correlation_id: str | None = None
    content_type: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    delivery_count: int = 0  # quorum queues count earlier deliveries in x-delivery-count


@dataclass(frozen=True, kw_only=True)
class Valid(Origin):
    """A message's items, all of its routing key's kind, and who sent it and how (`Origin`:
    what the intake gives each of their events)."""

    keyed: Keyed  # always: from the message's id (`ingress_key`)
    contacts: Sequence[ContactData] = ()
    interests: Sequence[InterestData] = ()
    # Routing key `interests.withdraw`: what DELETE /v1/interests/... does, item by item.
    withdrawals: Sequence[InterestWithdrawalData] = ()


@dataclass(frozen=True)
class Invalid:
    reason: str


def sender_of(user_id: str | None, headers: Mapping[str, Any], *, roac_user: str) -> str | None:
    """Who sent an ingress message, as its sources are judged and its events named.

    Normally the `user_id` property, which RabbitMQ checks against the connection's user. A
    message roac itself published as its own RabbitMQ user (`roac dlq replay`: integrations never
    hold that user, docs/ingress.md) is judged as the sender ingest recorded in `SENDER_HEADER`
    when it parked it. So a replay is neither refused for the user_id it cannot keep nor let
    past the original sender's binding; nobody else can claim a sender with that header, since
    only roac's own user may publish with roac's user_id."""
    if user_id != roac_user or SENDER_HEADER not in headers:
        return user_id
    recorded = headers[SENDER_HEADER]
    if isinstance(recorded, bytes):
        recorded = recorded.decode(errors="replace")
    return recorded if isinstance(recorded, str) and recorded else None


def integration_of(message: IngressMessage) -> str:
    return message.user_id or DEFAULT_INTEGRATION


def ingress_key(routing_key: str, message_id: str) -> str:
    """The key event ids derive from (`idempotency.event_id`). HTTP Idempotency-Keys cannot
    hold spaces, so no HTTP request can ever produce the same ids."""
    return f"amqp-ingress {routing_key} {message_id}"


class KeysNotLoaded(Exception):
    """The API keys are not loaded yet: whether the sender is bound to sources is unknown."""


GrantLookup = Callable[[str], Grant | None]


def source_refusal(
    user_id: str | None, sources: Sequence[str], grant: Grant | None, *, bound_only: bool
) -> str | None:
    """Why a message's people may not be written by its sender, or None. A RabbitMQ user named
    like an API key (its `user_id`, checked by the broker) writes only that key's sources, with
    `events:write`; with ROAC_INGRESS_REQUIRE_KEY every sender must be so named."""
    if grant is None:
        if bound_only:
            return (
                "the sender has no API key of its name: set user_id to the RabbitMQ user and "
                "create `roac keys create USER --source SOURCE` (ROAC_INGRESS_REQUIRE_KEY)"
            )
        return None
    if not grant.allows(Scope.EVENTS_WRITE):
        return f"the API key {user_id!r} lacks the scope 'events:write'"
    foreign = grant.foreign_sources(sources)
    if foreign:
        allowed = ", ".join(sorted(grant.sources or ()))
        refused = ", ".join(foreign)
        return f"the API key {user_id!r} may write the source(s) {allowed} only, not {refused}"
    return None


def examine(
    message: IngressMessage,
    *,
    max_body_bytes: int,
    max_interests_per_person: int | None = None,
    grant_named: GrantLookup | None = None,
    keys_loaded: Callable[[], bool] = lambda: True,
    bound_only: bool = False,
) -> Valid | Invalid:
    """Judge a message as the HTTP route judges its request (without `?partial=true`: a
    message is accepted or parked whole), and its sender's sources as the HTTP API judges an
    API key's."""
    if message.routing_key not in INGRESS_ROUTING_KEYS:
        keys = [f"'{key}'" for key in INGRESS_ROUTING_KEYS]
        expected = f"{', '.join(keys[:-1])} or {keys[-1]}"
        return Invalid(f"unknown routing key: publish with {expected}")
    if len(message.body) > max_body_bytes:
        return Invalid(
            f"body is {len(message.body)} bytes, over the limit of {max_body_bytes} bytes"
        )
    if not message.message_id:
        return Invalid(
            "the message_id property is required: event ids derive from it, so that a "
            "redelivered message changes nothing twice"
        )
    if first_unsafe(message.message_id) is not None:
        return Invalid(
            "the message_id property must not contain control characters or bidirectional "
            "formatting characters"
        )
    try:
        # Decoded here, strictly: json.loads would take UTF-16 and encoded surrogates.
        document = json.loads(message.body.decode("utf-8"))
    except UnicodeDecodeError:
        return Invalid("body is not JSON: not UTF-8 text")
    except json.JSONDecodeError as exc:
        # exc.msg and the position only; str(exc) is the same, but never the document.
        return Invalid(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        return Invalid("body is not JSON roac reads: nested too deep")
    except ValueError:
        # Python refuses to read an integer of more than sys.get_int_max_str_digits() digits.
        return Invalid("body is not JSON roac reads: a number has too many digits")
    try:
        body = _BODIES[message.routing_key].validate_python(document)
    except ValidationError as exc:
        return Invalid(reason_from(exc.errors()))
    batches = ContactBatch | InterestBatch | InterestWithdrawalBatch
    items = body.items if isinstance(body, batches) else [body]
    over = triage(
        [i for i in items if isinstance(i, InterestData)], max_per_person=max_interests_per_person
    ).errors
    if over:
        return Invalid(reason_from(over))
    if grant_named is not None:
        if not keys_loaded():
            raise KeysNotLoaded
        grant = grant_named(message.user_id) if message.user_id else None
        refusal = source_refusal(
            message.user_id, [i.source for i in items], grant, bound_only=bound_only
        )
        if refusal is not None:
            return Invalid(refusal)
    return Valid(
        contacts=[i for i in items if isinstance(i, ContactData)],
        interests=[i for i in items if isinstance(i, InterestData)],
        integration=integration_of(message),
        correlation_id=correlation_id_from(message.correlation_id or message.message_id),
        keyed=Keyed(
            ingress_key(message.routing_key, message.message_id),
            hashlib.sha256(message.body).digest(),
        ),
        # A withdrawal adds nobody to match, so it is never bulk (as over HTTP).
        bulk=_flag(message.headers.get(BULK_HEADER))
        and message.routing_key != INGRESS_WITHDRAW_INTERESTS,
        withdrawals=[i for i in items if isinstance(i, InterestWithdrawalData)],
    )


def reason_from(errors: Sequence[Any]) -> str:
    """`N invalid fields: items[3].kind: <message> [enum]; ...`, naming where and what, as the
    HTTP API's problem details do; a message that repeats the input value is left out."""
    noun = "field" if len(errors) == 1 else "fields"
    reason = f"{len(errors)} invalid {noun}: "
    shown = errors[:MAX_REASON_FIELDS]
    listed = 0
    for error, problem in zip(shown, field_problems(shown), strict=True):
        message = problem.message
        value = error.get("input")
        if isinstance(value, str | int | float) and str(value) and str(value) in message:
            message = "is invalid"
        # The field may be the sender's own text (an unknown key): shown escaped.
        part = escaped(f"{problem.field or 'body'}: {message} [{error.get('type', 'invalid')}]")
        # Room is kept for the "and N more" ending.
        if listed and len(reason) + len(part) + 2 > MAX_REASON_LENGTH - 20:
            break
        reason += ("; " if listed else "") + part[: MAX_REASON_LENGTH - 40]
        listed += 1
    if len(errors) > listed:
        reason += f"; and {len(errors) - listed} more"
    return reason


def _flag(value: object) -> bool:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # events confirmed by RabbitMQ: ack
    PARKED = "parked"  # invalid, parked with its reason (confirmed): ack
    REQUEUED = "requeued"  # RabbitMQ did not confirm: requeue (after a pause)
    REJECTED = "rejected"  # a bug: reject, RabbitMQ dead-letters it to the same parking queue


class ParkFailed(Exception):
    """RabbitMQ did not confirm the parked copy: the original must stay in the ingress queue."""


# Worth another delivery: RabbitMQ did not confirm, or a connection failed on the way.
_RETRYABLE: tuple[type[BaseException], ...] = (
    PublishFailed,
    ParkFailed,
    KeysNotLoaded,
    *TRANSIENT_ERRORS,
)


class Parker(Protocol):
    async def park(self, message: IngressMessage, reason: str) -> None: ...


class Ingress:
    """Ingest's use case for one ingress message."""

    def __init__(
        self,
        publisher: Publisher,
        parker: Parker,
        *,
        max_body_bytes: int,
        max_interests_per_person: int | None = None,
        grant_named: GrantLookup | None = None,
        keys_loaded: Callable[[], bool] = lambda: True,
        bound_only: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        # No idempotency store: the ingress message's id alone makes the event ids repeatable.
        self._intake = Intake(publisher)
        self._parker = parker
        self._max_body_bytes = max_body_bytes
        self._max_interests_per_person = max_interests_per_person
        self._grant_named = grant_named
        self._keys_loaded = keys_loaded
        self._bound_only = bound_only
        self._sleep = sleep

    async def handle(self, message: IngressMessage) -> Outcome:
        try:
            # Inside the try: a bug in judging a message rejects it, like any other bug.
            verdict = examine(
                message,
                max_body_bytes=self._max_body_bytes,
                max_interests_per_person=self._max_interests_per_person,
                grant_named=self._grant_named,
                keys_loaded=self._keys_loaded,
                bound_only=self._bound_only,
            )
            if isinstance(verdict, Invalid):
                await self._parker.park(message, verdict.reason)
                # The reason holds no input values; the message id is the integration's token.
                log.warning(
                    "parked ingress message %s from %s: %s",
                    escaped(message.message_id or ""),
                    integration_of(message),
                    verdict.reason,
                )
                outcome = Outcome.PARKED
            else:
                await self._accept(verdict)
                outcome = Outcome.ACCEPTED
        except _RETRYABLE as exc:
            delay = requeue_delay(message.delivery_count)
            log.warning(
                "RabbitMQ did not confirm for ingress message %s (delivery %d), requeueing in "
                "%.1fs: %r",
                escaped(message.message_id or ""),
                message.delivery_count + 1,
                delay,
                exc,
            )
            # A pause, so that a broker hiccup does not burn through the delivery limit.
            await self._sleep(delay)
            outcome = Outcome.REQUEUED
        except Exception:
            log.exception(
                "rejecting ingress message %s after an unexpected error",
                escaped(message.message_id or ""),
            )
            outcome = Outcome.REJECTED
        INGRESS_MESSAGES.labels(outcome.value).inc()
        return outcome

    async def _accept(self, valid: Valid) -> None:
        # A message is one routing key's body: items of one kind, at least one (the schemas').
        items = valid.contacts or valid.interests or valid.withdrawals
        if items:
            await self._intake.accept_batch(items, valid)
