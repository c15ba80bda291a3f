"""Ingest's HTTP routes: parse, call the intake, answer. No decisions here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.ingest.idempotency import check_key, fingerprint
from services.ingest.intake import Answer, Intake, Keyed, correlation_id_from
from services.ingest.schemas import (
    Accepted,
    ContactBatch,
    ContactsBody,
    InterestBatch,
    InterestsBody,
)
from shared.events import ContactRef
from shared.logs import correlation_id as current_correlation
from shared.problems import Problem

# Declares the scheme in the OpenAPI document; the check itself is ApiKeyMiddleware.
_bearer = HTTPBearer(
    auto_error=False, description="An API key: `roac keys create NAME`, or one of ROAC_API_KEYS"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
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

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}, "description": text}
    for status, text in {
        400: "Malformed JSON",
        401: "Missing or invalid API key",
        409: "Idempotency-Key already used for another request, or still being handled",
        413: "Body too large",
        422: "Invalid fields (every one listed); nothing was published",
        503: "RabbitMQ did not confirm; nothing was accepted, retry",
    }.items()
}

api = APIRouter(prefix="/v1", tags=["ingest"], responses=_PROBLEMS)


def _intake(request: Request) -> Intake:
    intake: Intake = request.app.state.intake
    return intake


def _context(request: Request, response: Response) -> tuple[str, str]:
    correlation_id = correlation_id_from(request.headers.get("x-correlation-id"))
    current_correlation.set(correlation_id)
    response.headers["X-Correlation-ID"] = correlation_id
    return correlation_id, request.state.integration


async def _keyed(request: Request, response: Response) -> Keyed | None:
    """The request's Idempotency-Key, with a fingerprint of what it asks for."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    response.headers["Idempotency-Key"] = check_key(key)
    body = await request.body()  # already read and cached by the validation
    return Keyed(key, fingerprint(request.method, request.url.path, body))


def _answered(answer: Answer, response: Response) -> Accepted:
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return answer.accepted


@api.post("/contacts", status_code=202, response_model=Accepted, summary="Upsert people")
async def post_contacts(
    body: ContactsBody,
    request: Request,
    response: Response,
    _: Credentials,
    __: IdempotencyKey = None,
    bulk: BulkFlag = False,
) -> Accepted:
    """One person, or `{"items": [...]}` of up to 1,000. Answered once RabbitMQ confirmed them.
    With `Idempotency-Key`, a retry gets the first answer and publishes nothing again."""
    correlation_id, integration = _context(request, response)
    items = body.items if isinstance(body, ContactBatch) else [body]
    answer = await _intake(request).accept_contacts(
        items,
        correlation_id=correlation_id,
        integration=integration,
        keyed=await _keyed(request, response),
        bulk=bulk,
    )
    return _answered(answer, response)


@api.post("/interests", status_code=202, response_model=Accepted, summary="Declare interests")
async def post_interests(
    body: InterestsBody,
    request: Request,
    response: Response,
    _: Credentials,
    __: IdempotencyKey = None,
    bulk: BulkFlag = False,
) -> Accepted:
    """One interest (`likes`, `seeks` or `offers` a topic), or `{"items": [...]}` of up to 1,000.
    With `Idempotency-Key`, a retry gets the first answer and publishes nothing again."""
    correlation_id, integration = _context(request, response)
    items = body.items if isinstance(body, InterestBatch) else [body]
    answer = await _intake(request).accept_interests(
        items,
        correlation_id=correlation_id,
        integration=integration,
        keyed=await _keyed(request, response),
        bulk=bulk,
    )
    return _answered(answer, response)


# A person as an integration knows them, in the path (the same rules as ContactRef's fields).
SourcePath = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="Source"),
]
ExternalIdPath = Annotated[
    str, Path(min_length=1, max_length=256, description="The person's id in that source")
]


@api.delete(
    "/contacts/{source}/{external_id}",
    status_code=202,
    response_model=Accepted,
    summary="Erase a person",
)
async def erase_contact(
    source: SourcePath,
    external_id: ExternalIdPath,
    request: Request,
    response: Response,
    _: Credentials,
    __: IdempotencyKey = None,
) -> Accepted:
    """Erase a person everywhere (`contact.erased.v1`): the matcher and the notifier delete or
    scrub everything that identifies them, cancel what was not sent yet (introductions naming
    them included) and keep only a digest so that late events cannot bring them back."""
    correlation_id, integration = _context(request, response)
    answer = await _intake(request).accept_erasure(
        ContactRef(source=source, external_id=external_id),
        correlation_id=correlation_id,
        integration=integration,
        keyed=await _keyed(request, response),
    )
    return _answered(answer, response)


@api.post(
    "/contacts/{source}/{external_id}/opt-out",
    status_code=202,
    response_model=Accepted,
    summary="Opt a person out",
)
async def opt_out_contact(
    source: SourcePath,
    external_id: ExternalIdPath,
    request: Request,
    response: Response,
    _: Credentials,
    __: IdempotencyKey = None,
) -> Accepted:
    """No more introductions for this person (`contact.opted_out.v1`, as their unsubscribe
    link does): the matcher proposes them no more and the notifier sends nothing pending or
    in flight to them."""
    correlation_id, integration = _context(request, response)
    answer = await _intake(request).accept_opt_out(
        ContactRef(source=source, external_id=external_id),
        correlation_id=correlation_id,
        integration=integration,
        keyed=await _keyed(request, response),
    )
    return _answered(answer, response)
