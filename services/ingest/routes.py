"""Ingest's HTTP routes: parse, call the use case (`Intake`, services/ingest/publishing.py),
answer. No decisions here (which items of a batch are accepted: services/ingest/batch_triage.py)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from services.ingest.batch_triage import Item, Triage, triage
from services.ingest.idempotency import check_key, fingerprint, legacy_fingerprint
from services.ingest.publishing import Answer, Intake, Keyed, Origin, correlation_id_from
from services.ingest.schemas import (
    Accepted,
    BatchAccepted,
    ContactItems,
    ContactsRequest,
    InterestItems,
    InterestsRequest,
    PreferencesRequest,
    Unparsed,
)
from shared.authorization import check_sources, requires
from shared.events import (
    ContactData,
    ContactRef,
    InterestData,
    InterestKind,
    InterestWithdrawalData,
)
from shared.logs import correlation_id as current_correlation
from shared.person_path import ExternalIdPath, SourcePath
from shared.problems import Problem
from shared.scopes import Scope

# Declared for the OpenAPI document; read from the request by `_keyed`.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Any unique token per logical request (kept 24 h): a retry with the same key "
        "and body gets the first answer; the same key with another body is a 409.",
    ),
]

# A bulk import's requests carry `X-Roac-Bulk: true`.
BulkFlag = Annotated[
    bool,
    Header(
        alias="X-Roac-Bulk",
        description="`true` for a bulk import (`roac import`): the events are applied but "
        "introduce nobody at once; the next round matches them. An import never floods people.",
    ),
]

# Without it a batch is accepted whole or refused whole.
PartialFlag = Annotated[
    bool,
    Query(
        description="`true`: accept the valid items of a batch and list the others in "
        "`rejected` (by index, with their errors) instead of refusing the whole batch; a batch "
        "with no valid item is still a 422.",
    ),
]

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}, "description": text}
    for status, text in {
        400: "Malformed JSON",
        401: "Missing or invalid API key",
        403: "The API key lacks the route's scope, or may not write the person's source",
        409: "Idempotency-Key already used for another request, or still being handled",
        413: "Body too large",
        422: "Invalid fields or items over a limit (every one listed); nothing was published",
        503: "RabbitMQ did not confirm; nothing was accepted, retry",
    }.items()
}

api = APIRouter(prefix="/v1", tags=["ingest"], responses=_PROBLEMS)


def _intake(request: Request) -> Intake:
    intake: Intake = request.app.state.intake
    return intake


def _correlated(request: Request, response: Response) -> str:
    """The request's correlation id (the caller's, or a fresh one), for its logs and answer."""
    correlation_id = correlation_id_from(request.headers.get("x-correlation-id"))
    current_correlation.set(correlation_id)
    response.headers["X-Correlation-ID"] = correlation_id
    return correlation_id


async def _origin(
    request: Request, response: Response, correlation_id: str, *, bulk: bool = False
) -> Origin:
    """Who sent the request and how: what the intake gives each of its events."""
    return Origin(
        correlation_id=correlation_id,
        integration=request.state.integration,
        keyed=await _keyed(request, response),
        bulk=bulk,
    )


async def _keyed(request: Request, response: Response) -> Keyed | None:
    """The request's Idempotency-Key, with a fingerprint of what it asks for."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    response.headers["Idempotency-Key"] = check_key(key)
    body = await request.body()  # already read and cached by the validation
    # The query is part of the request: the same body with and without ?partial=true differ.
    target = f"{request.url.path}?{request.url.query}" if request.url.query else request.url.path
    key_bytes: bytes | None = request.app.state.fingerprint_key
    return Keyed(
        key,
        fingerprint(request.method, target, body, key_bytes),
        partial(legacy_fingerprint, request.method, target, body) if key_bytes else None,
    )


A = TypeVar("A", bound=Accepted)


def _answered(answer: Answer[A], response: Response) -> A:
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return answer.accepted


def _admitted(sorted_items: Triage[Item], *, partial: bool) -> Triage[Item]:
    """The batch's triage, or the 422 every invalid request gets (the same problem details)."""
    if sorted_items.refused(partial=partial):
        raise RequestValidationError(sorted_items.errors)
    return sorted_items


async def _accept_batch(
    request: Request,
    response: Response,
    items: Sequence[Item | Unparsed],
    *,
    max_per_person: int | None,
    bulk: bool,
    partial: bool,
) -> BatchAccepted:
    """A batch request: triaged (422 unless it may be accepted), its sources checked against
    the key's, published, answered (a keyed retry: the first answer)."""
    correlation_id = _correlated(request, response)
    batch = _admitted(triage(items, max_per_person=max_per_person), partial=partial)
    check_sources(request, Scope.EVENTS_WRITE, (item.source for item in batch.items))
    answer = await _intake(request).accept_batch(
        batch.items,
        await _origin(request, response, correlation_id, bulk=bulk),
        indexes=batch.indexes,
        rejected=batch.rejected,
    )
    return _answered(answer, response)


_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Confirmed by RabbitMQ: every item, or with `?partial=true` the items "
        "in `indexes`, the others listed in `rejected`"
    }
}


@api.post(
    "/contacts",
    status_code=202,
    response_model=BatchAccepted,
    responses=_ACCEPTED,
    summary="Upsert people",
    dependencies=[requires(Scope.EVENTS_WRITE)],
)
async def post_contacts(
    body: ContactsRequest,
    request: Request,
    response: Response,
    __: IdempotencyKey = None,
    bulk: BulkFlag = False,
    partial: PartialFlag = False,
) -> BatchAccepted:
    """One person, or `{"items": [...]}` of up to 1,000, accepted whole unless `?partial=true`.
    Answered once RabbitMQ confirmed them. With `Idempotency-Key`, a retry gets the first answer
    and publishes nothing again."""
    items: list[ContactData | Unparsed] = body.items if isinstance(body, ContactItems) else [body]
    return await _accept_batch(
        request, response, items, max_per_person=None, bulk=bulk, partial=partial
    )


@api.post(
    "/interests",
    status_code=202,
    response_model=BatchAccepted,
    responses=_ACCEPTED,
    summary="Declare interests",
    dependencies=[requires(Scope.EVENTS_WRITE)],
)
async def post_interests(
    body: InterestsRequest,
    request: Request,
    response: Response,
    __: IdempotencyKey = None,
    bulk: BulkFlag = False,
    partial: PartialFlag = False,
) -> BatchAccepted:
    """One interest (`likes`, `seeks` or `offers` a topic), or `{"items": [...]}` of up to 1,000,
    at most ROAC_INGEST_MAX_INTERESTS_PER_PERSON (default 100) for one person; accepted whole
    unless `?partial=true`. With `Idempotency-Key`, a retry gets the first answer and publishes
    nothing again."""
    items: list[InterestData | Unparsed] = body.items if isinstance(body, InterestItems) else [body]
    limit: int = request.app.state.max_interests_per_person
    return await _accept_batch(
        request, response, items, max_per_person=limit, bulk=bulk, partial=partial
    )


async def _person(source: SourcePath, external_id: ExternalIdPath) -> ContactRef:
    """The person in the path, checked as ContactRef checks it: an id that is only whitespace
    passes the path's own rules but is empty once stripped, a 422 and not a 500."""
    try:
        return ContactRef(source=source, external_id=external_id)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {"type": e["type"], "loc": ("path", *e["loc"]), "msg": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from None


Person = Annotated[ContactRef, Depends(_person)]


async def _withdrawal(
    person: Person,
    topic: Annotated[
        str,
        Query(
            min_length=1,
            max_length=400,
            description="The topic as declared (normalised the same way: case, whitespace, NFC)",
        ),
    ],
    kind: Annotated[
        InterestKind | None, Query(description="Only this kind; omitted: every kind of the topic")
    ] = None,
) -> InterestWithdrawalData:
    """The interest named by the path and query, its topic normalised as a declared one is."""
    try:
        return InterestWithdrawalData(
            source=person.source, external_id=person.external_id, topic=topic, kind=kind
        )
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {"type": e["type"], "loc": ("query", *e["loc"]), "msg": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from None


@api.delete(
    # `:person_id` (shared/person_path.py): an id may hold a slash, even a line break (refused).
    "/contacts/{source}/{external_id:person_id}",
    status_code=202,
    response_model=Accepted,
    summary="Erase a person",
    dependencies=[requires(Scope.CONTACTS_ERASE)],
)
async def erase_contact(
    person: Person,
    request: Request,
    response: Response,
    __: IdempotencyKey = None,
) -> Accepted:
    """Erase a person everywhere (`contact.erased.v1`): the matcher and the notifier delete or
    scrub everything that identifies them, cancel what was not sent yet (introductions naming
    them included) and keep only a digest so that late events cannot bring them back."""
    check_sources(request, Scope.CONTACTS_ERASE, [person.source])
    origin = await _origin(request, response, _correlated(request, response))
    return _answered(await _intake(request).accept_erasure(person, origin), response)


@api.post(
    "/contacts/{source}/{external_id:person_id}/opt-out",
    status_code=202,
    response_model=Accepted,
    summary="Opt a person out",
    dependencies=[requires(Scope.EVENTS_WRITE)],
)
async def opt_out_contact(
    person: Person,
    request: Request,
    response: Response,
    __: IdempotencyKey = None,
) -> Accepted:
    """No more introductions for this person (`contact.opted_out.v1`, as their unsubscribe
    link does): the matcher proposes them no more and the notifier sends nothing pending or
    in flight to them."""
    check_sources(request, Scope.EVENTS_WRITE, [person.source])
    origin = await _origin(request, response, _correlated(request, response))
    return _answered(await _intake(request).accept_opt_out(person, origin), response)


@api.post(
    "/contacts/{source}/{external_id:person_id}/preferences",
    status_code=202,
    response_model=Accepted,
    summary="Change a person's preferences on their behalf",
    dependencies=[requires(Scope.PREFERENCES_WRITE)],
)
async def change_preferences(
    person: Person,
    body: PreferencesRequest,
    request: Request,
    response: Response,
    __: IdempotencyKey = None,
) -> Accepted:
    """What the person could choose on their preferences page, set for them (they asked by
    email, say): a pause (`paused_until`; null ends it), their weekly and monthly caps, their
    language. One `contact.preferences_changed.v1` naming the fields sent: the matcher holds
    them as the person's own choice, which the integration's later upserts do not undo (a
    pause outlasts any `snoozed_until` they send), and the person's preferences page shows
    them. A field left out is left as it is; an empty body is a 422."""
    check_sources(request, Scope.PREFERENCES_WRITE, [person.source])
    origin = await _origin(request, response, _correlated(request, response))
    intake = _intake(request)
    return _answered(await intake.accept_preferences(body.as_event_data(person), origin), response)


@api.delete(
    # `:person_id` (shared/person_path.py): an id may hold a slash, even a line break (refused).
    "/interests/{source}/{external_id:person_id}",
    status_code=202,
    response_model=Accepted,
    summary="Withdraw an interest",
    dependencies=[requires(Scope.EVENTS_WRITE)],
)
async def withdraw_interest(
    withdrawal: Annotated[InterestWithdrawalData, Depends(_withdrawal)],
    request: Request,
    response: Response,
    __: IdempotencyKey = None,
) -> Accepted:
    """The person no longer likes, seeks or offers `topic` (`interest.withdrawn.v1`): the
    matcher stops matching them on it, and the topic's count drops. Withdrawing an interest the
    person does not hold is accepted and changes nothing."""
    check_sources(request, Scope.EVENTS_WRITE, [withdrawal.source])
    origin = await _origin(request, response, _correlated(request, response))
    return _answered(await _intake(request).accept_batch([withdrawal], origin), response)
