"""The HTTP API's request and response bodies. Items are the event payloads from shared/events.py,
so what an integration sends is exactly what the matcher receives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from shared.events import (
    ChannelAddress,
    ContactData,
    ContactRef,
    InterestData,
    InterestWithdrawalData,
    LanguageTag,
    MonthlyCap,
    PreferenceField,
    PreferencesData,
    WeeklyCap,
)
from shared.problems import FieldProblem

MAX_BATCH_ITEMS = 1000


class InboundChannel(ChannelAddress):
    """A channel as an integration sends it: a webhook or chat URL must also be one a client
    can request (shared/events.py `requestable_url`). Checked here, at the door, and not in the
    event schema, which also reads back what was stored before the rule."""

    @model_validator(mode="after")
    def _requestable(self) -> InboundChannel:
        self.check_requestable()
        return self


class InboundContact(ContactData):
    """A contact as an integration sends it (`ContactData`, its channels `InboundChannel`)."""

    channels: list[InboundChannel] = Field(default_factory=list, max_length=10)  # type: ignore[assignment]


class ContactBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[InboundContact] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class InterestBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[InterestData] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class InterestWithdrawalBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[InterestWithdrawalData] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return "batch" if "items" in value else "single"
    return "batch" if isinstance(getattr(value, "items", None), list) else "single"


ContactsBody = Annotated[
    Annotated[InboundContact, Tag("single")] | Annotated[ContactBatch, Tag("batch")],
    Discriminator(_shape),
]
InterestsBody = Annotated[
    Annotated[InterestData, Tag("single")] | Annotated[InterestBatch, Tag("batch")],
    Discriminator(_shape),
]

# What the AMQP ingress takes with routing key `interests.withdraw` (HTTP: one per DELETE).
InterestWithdrawalsBody = Annotated[
    Annotated[InterestWithdrawalData, Tag("single")]
    | Annotated[InterestWithdrawalBatch, Tag("batch")],
    Discriminator(_shape),
]


class Unparsed:
    """A batch item that failed validation, with its errors located inside the item. Kept
    instead of failing the whole body, so that `?partial=true` can accept the other items; the
    input itself is not kept (the errors never echo it)."""

    __slots__ = ("errors",)

    def __init__(self, errors: Sequence[Any]) -> None:
        self.errors: tuple[Any, ...] = tuple(errors)


_CONTACT: TypeAdapter[InboundContact] = TypeAdapter(InboundContact)
_INTEREST: TypeAdapter[InterestData] = TypeAdapter(InterestData)


def _contact_or_unparsed(value: Any) -> ContactData | Unparsed:
    try:
        return _CONTACT.validate_python(value)
    except ValidationError as exc:
        return Unparsed(exc.errors(include_url=False, include_input=False))


def _interest_or_unparsed(value: Any) -> InterestData | Unparsed:
    try:
        return _INTEREST.validate_python(value)
    except ValidationError as exc:
        return Unparsed(exc.errors(include_url=False, include_input=False))


# Documented as the plain item (json_schema_input_type): the API's schema is unchanged.
ContactItem = Annotated[
    ContactData | Unparsed,
    PlainValidator(_contact_or_unparsed, json_schema_input_type=InboundContact),
]
InterestItem = Annotated[
    InterestData | Unparsed,
    PlainValidator(_interest_or_unparsed, json_schema_input_type=InterestData),
]


# The HTTP batches: the envelope is checked here, each item by itself, so that the route can
# refuse a batch whole or accept it partially (services/ingest/batch_triage.py decides).
class ContactItems(BaseModel):
    """Up to 1,000 people, accepted whole, or with `?partial=true` item by item."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    items: list[ContactItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class InterestItems(BaseModel):
    """Up to 1,000 interests, accepted whole, or with `?partial=true` item by item."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    items: list[InterestItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


ContactsRequest = Annotated[
    Annotated[InboundContact, Tag("single")] | Annotated[ContactItems, Tag("batch")],
    Discriminator(_shape),
]
InterestsRequest = Annotated[
    Annotated[InterestData, Tag("single")] | Annotated[InterestItems, Tag("batch")],
    Discriminator(_shape),
]


class PreferencesRequest(BaseModel):
    """What POST /v1/contacts/{source}/{external_id}/preferences sets on the person's behalf
    (they asked the community manager): any of these fields. A field sent is changed (null
    undoes it); a field left out is left as it is, whatever the person chose on their page."""

    # minProperties: the document says what `_sets_something` refuses.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    paused_until: AwareDatetime | None = Field(
        default=None,
        description="No introductions until then, whatever the integration's later upserts "
        "say (`snoozed_until`); null ends the person's pause now.",
    )
    cap_per_week: WeeklyCap | None = Field(
        default=None,
        description="At most this many introductions a week (never above the operator's "
        "ROAC_MATCH_CAP_PER_WEEK); null: the operator's cap.",
    )
    cap_per_month: MonthlyCap | None = Field(
        default=None,
        description="At most this many introductions in a rolling 30 days; null: no monthly cap.",
    )
    language: LanguageTag | None = Field(
        default=None,
        description="The language of their messages (`de`, `de-AT`), over the integration's; "
        "null: the integration's again.",
    )

    @model_validator(mode="after")
    def _sets_something(self) -> PreferencesRequest:
        if not self.model_fields_set:
            raise ValueError(
                "the body sets none of paused_until, cap_per_week, cap_per_month, language"
            )
        return self

    def changed(self) -> list[PreferenceField]:
        """The fields the body sets, null ones included (a null ends a pause), in the order
        they are declared: what the event's `changed` names."""
        fields: tuple[PreferenceField, ...] = (
            "paused_until",
            "cap_per_week",
            "cap_per_month",
            "language",
        )
        return [name for name in fields if name in self.model_fields_set]

    def as_event_data(self, person: ContactRef) -> PreferencesData:
        """The contact.preferences_changed.v1 payload for `person`: only the fields set."""
        return PreferencesData(
            source=person.source,
            external_id=person.external_id,
            changed=self.changed(),
            **self.model_dump(include=set(self.model_fields_set)),
        )


class Accepted(BaseModel):
    """Returned with 202 once RabbitMQ has confirmed every event of the request."""

    accepted: int
    event_ids: list[UUID]
    correlation_id: str


class RejectedItem(BaseModel):
    """An item refused by a partially accepted batch (`?partial=true`)."""

    index: int = Field(description="The item's position in `items`, from 0.")
    errors: list[FieldProblem] = Field(
        description="What is wrong with it, as in a 422's `errors` (`items[3].kind`)."
    )


class BatchAccepted(Accepted):
    """Returned with 202 by POST /v1/contacts and /v1/interests once RabbitMQ has confirmed the
    events: `event_ids[k]` is the event of item `indexes[k]`."""

    # Always sent, so documented as required in the answer's schema.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    indexes: list[int] = Field(
        description="The position in `items` of each accepted item, in the order of "
        "`event_ids` (`[0]` for a single object)."
    )
    rejected: list[RejectedItem] = Field(
        default_factory=list,
        description="With `?partial=true`: the items refused, by index, with their errors. "
        "Without it a batch is accepted whole, so this is empty.",
    )

    @model_validator(mode="before")
    @classmethod
    def _indexes_of_older_answers(cls, data: Any) -> Any:
        # Answers recorded for Idempotency-Key before `indexes` existed accepted every item.
        if isinstance(data, dict) and "indexes" not in data and "event_ids" in data:
            return {**data, "indexes": list(range(len(data["event_ids"])))}
        return data
