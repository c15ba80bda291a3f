"""Every message roac sends over RabbitMQ, defined once and versioned.

Wire format: an AMQP message body is an `EventBatch`, a JSON object `{"events": [...]}` holding
one or more envelopes of the same type; the routing key is that type (`interest.declared.v1`).
Each envelope has its own `message_id`, which is what consumers deduplicate on; several events
per AMQP message is how ingest reaches tens of thousands of events per second while the broker
handles a few thousand messages per second.

A breaking change to a payload gets a new type (`...v2`) published beside the old one until
every consumer has moved; adding an optional field is not breaking.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Literal, TypedDict
from urllib.parse import urlsplit
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from shared.email_address import EmailAddress, check_email
from shared.names import SOURCE_PATTERN
from shared.text_safety import (
    CORRELATION_ID_PATTERN,
    SINGLE_LINE,
    correlation_token,
    neutralised,
)
from shared.topics import MAX_TOPIC_LENGTH, normalize_topic


@lru_cache(maxsize=1024)
def _known_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _check_timezone(name: str) -> str:
    if not _known_timezone(name):
        raise ValueError("must be an IANA time zone name such as 'Europe/Berlin'")
    return name


# Every inbound string type ends with SINGLE_LINE (shared/text_safety.py): no control,
# line-break or bidirectional formatting character, checked on the value as sent. Names end up
# in email headers and chat messages, where a line break is an injection; PostgreSQL refuses NUL.
SourceName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=SOURCE_PATTERN),
    SINGLE_LINE,
]
ExternalId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256), SINGLE_LINE
]
PersonName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), SINGLE_LINE
]
OrganizationName = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=200), SINGLE_LINE
]
TagName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_.:-]*$",
    ),
    SINGLE_LINE,
]
TimezoneName = Annotated[
    str, StringConstraints(max_length=64), AfterValidator(_check_timezone), SINGLE_LINE
]
Topic = Annotated[
    str,
    StringConstraints(max_length=MAX_TOPIC_LENGTH * 2),
    AfterValidator(normalize_topic),
    StringConstraints(min_length=1, max_length=MAX_TOPIC_LENGTH),
    SINGLE_LINE,
]
ContactEmail = Annotated[EmailAddress, SINGLE_LINE]
ChannelAddressText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048), SINGLE_LINE
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InterestKind(StrEnum):
    """`likes` makes peers; `seeks` meets `offers` (a question meets an expert, a job seeker
    meets an employer)."""

    LIKES = "likes"
    SEEKS = "seeks"
    OFFERS = "offers"


class ChannelType(StrEnum):
    """Where a person can be reached; what `address` holds depends on the type."""

    EMAIL = "email"  # an email address
    SLACK = "slack"  # a Slack member id (U...), reached by roac's Slack app (bot token)
    SLACK_WEBHOOK = "slack_webhook"  # a Slack incoming-webhook URL
    MATTERMOST = "mattermost"  # a Mattermost incoming-webhook URL
    DISCORD = "discord"  # a Discord webhook URL
    TEAMS = "teams"  # a Microsoft Teams workflow webhook URL
    MATRIX = "matrix"  # a Matrix room id (!room:server) the roac account has joined
    WEBHOOK = "webhook"  # any URL receiving roac's signed JSON payload


WEBHOOK_CHANNELS = frozenset(
    {
        ChannelType.SLACK_WEBHOOK,
        ChannelType.MATTERMOST,
        ChannelType.DISCORD,
        ChannelType.TEAMS,
        ChannelType.WEBHOOK,
    }
)
_SLACK_MEMBER = re.compile(r"^[UW][A-Z0-9]{2,30}$")
# `!opaque:server`, or from room version 12 on `!` and an unpadded base64url hash with no
# server part (`!a7G9ApKyRNROXlR-CORDHmUsA39SUdFv5iFQGG3UMbs`).
_MATRIX_ROOM = re.compile(r"^![^:\s]+(?::[^\s]+)?$")


class ChannelAddress(_Model):
    type: ChannelType
    address: ChannelAddressText

    @model_validator(mode="after")
    def _address_fits_type(self) -> ChannelAddress:
        if self.type is ChannelType.EMAIL:
            check_email(self.address)
        elif self.type is ChannelType.SLACK:
            if not _SLACK_MEMBER.match(self.address):
                raise ValueError("a slack address is a member id such as U024BE7LH")
        elif self.type is ChannelType.MATRIX:
            if not _MATRIX_ROOM.match(self.address):
                raise ValueError(
                    "a matrix address is a room id such as !abc:example.org or, from room "
                    "version 12, !a7G9ApKyRNROXlR-CORDHmUsA39SUdFv5iFQGG3UMbs"
                )
        else:
            try:
                _web_url(self.address)
            except ValueError as exc:
                raise ValueError(f"a {self.type.value} address {exc}") from None
        return self

    def check_requestable(self) -> None:
        """For a channel coming in (ingest's door, not an event read back): a URL must be one
        a client can request (`requestable_url`)."""
        if self.type in WEBHOOK_CHANNELS:
            try:
                requestable_url(self.address)
            except ValueError as exc:
                raise ValueError(f"a {self.type.value} address {exc}") from None


class ContactRef(_Model):
    """A person as an integration knows them."""

    source: SourceName
    external_id: ExternalId


# A language tag as people and integrations write them: `de`, `de-AT`, `pt_BR`.
LanguageTag = Annotated[
    str, StringConstraints(max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")
]


class ContactData(ContactRef):
    name: PersonName
    email: ContactEmail | None = None
    organization: OrganizationName | None = None
    timezone: TimezoneName | None = None
    # In preference order; ingest puts `email` first when it is not already listed.
    channels: list[ChannelAddress] = Field(default_factory=list, max_length=10)
    # Labels that pools select people by ("berlin", "mentors-2026"): lower-case, like sources.
    tags: list[TagName] = Field(default_factory=list, max_length=20)
    # No introductions until then (a holiday, a busy month); omitted or null means available.
    snoozed_until: AwareDatetime | None = None
    # People this person never wants to be introduced to, as the same integration knows them.
    blocks: list[ContactRef] = Field(default_factory=list, max_length=200)
    # The language their messages are written in (`de`, `de-AT`), when roac has templates for
    # it; otherwise ROAC_DEFAULT_LANGUAGE.
    language: LanguageTag | None = None


MIN_INTEREST_WEIGHT = 0.001


class InterestData(ContactRef):
    topic: Topic
    kind: InterestKind = InterestKind.LIKES
    # At least 0.001: the matcher stores weights as 4-byte floats, where a smaller positive
    # weight could round to 0 and break the store's `weight > 0` rule after ingest accepted it.
    weight: float = Field(default=1.0, ge=MIN_INTEREST_WEIGHT, le=10)


class InterestWithdrawalData(ContactRef):
    """The person no longer holds this interest (DELETE /v1/interests/{source}/{external_id}):
    as of the event, what this identity declared on `topic` (of `kind`, or of every kind when
    None) is withdrawn; a later declaration brings it back, an older one arriving late does not."""

    topic: Topic
    kind: InterestKind | None = None


# Text the matcher writes into an introduction from what ingest already checked: what the
# character rule refuses is replaced (U+FFFD) when read again, since anyone who may publish to
# the exchange could write it, and a row stored before the rule could hold it; never refused,
# so that an introduction is not lost over a name.
InternalText = Annotated[str, AfterValidator(neutralised)]


class Participant(ContactRef):
    name: InternalText
    organization: InternalText | None = None
    timezone: InternalText | None = None
    channels: list[ChannelAddress]
    # The language their messages are written in (when roac has templates for it).
    language: LanguageTag | None = None


class TopicRelation(StrEnum):
    SHARED = "shared"  # both like it
    SEEKS_OFFERS = "seeks_offers"  # one seeks what the other offers


class IntroTopic(_Model):
    topic: InternalText
    relation: TopicRelation
    seeker: ContactRef | None = None
    offerer: ContactRef | None = None


class IntroData(_Model):
    proposal_id: UUID
    # Kept for messages written before the notifier decided the mode (ROAC_INTRO_MODE); unused.
    mode: str | None = None
    participants: list[Participant] = Field(min_length=2, max_length=6)
    topics: list[IntroTopic] = Field(min_length=1)
    score: float
    reason: InternalText
    # When the event that led to this proposal entered roac (an interest's occurred_at): the
    # notifier measures ingest-to-first-message latency from it.
    triggered_at: AwareDatetime | None = None
    # The round that made this proposal (POST /v1/rounds); None for a live, event-triggered one.
    round_id: UUID | None = None
    # When each participant is asked "did you meet?" after the introduction (a pool's
    # `checkin_after_days`); None: the notifier's ROAC_CHECKIN_AFTER_SECONDS.
    checkin_after_seconds: int | None = Field(default=None, ge=1)


_HOST_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def _web_url(value: str) -> str:
    """An http(s) URL with a host: what every event holding a URL is held to, also when the
    notifier or the matcher reads one back that was stored long ago."""
    url = urlsplit(value)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ValueError("must be an http(s) URL")
    return value


def requestable_url(value: str) -> str:
    """An http(s) URL a client could actually request: a host name of valid labels (IDNA for
    non-ASCII ones) or an IP literal, and a port in range. Checked where a URL comes in
    (ingest's contacts, the matcher's resources), not when an event is read back: an address
    stored before this rule must not break the introduction it is part of. What fails here
    used to fail at send time, where it was retried as if the network were down."""
    _web_url(value)
    url = urlsplit(value)
    try:
        port = url.port  # raises for a port that is no number or out of range
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("must be an http(s) URL with a port from 1 to 65535")
    host = url.hostname or ""
    if url.netloc.rsplit("@", 1)[-1].startswith("["):
        return value  # an IPv6 literal: urlsplit checked it
    try:
        labels = host.rstrip(".").encode("idna").decode("ascii").split(".")
    except UnicodeError:
        raise ValueError("must be an http(s) URL with a valid host name") from None
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError("must be an http(s) URL with a valid host name")
    return value


WebUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=2048),
    AfterValidator(_web_url),
    SINGLE_LINE,
]
# A URL as it comes in through an API (the matcher's resources): also one a client can request.
RequestableUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=2048),
    AfterValidator(requestable_url),
    SINGLE_LINE,
]
ResourceTitle = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300), SINGLE_LINE
]


class ResourceData(_Model):
    """A resource (an article, an event, a job post) brought to one person interested in it.
    One proposal per (resource, recipient): the notifier delivers it once, without asking."""

    proposal_id: UUID
    resource_id: UUID
    url: WebUrl
    title: ResourceTitle
    recipient: Participant
    topics: list[InternalText] = Field(min_length=1, max_length=20)  # the recipient's topics
    reason: InternalText
    triggered_at: AwareDatetime | None = None


class DeliveryKind(StrEnum):
    ASK = "ask"  # double opt-in: "would you like to meet ...?"
    INTRO = "intro"  # the introduction itself
    RESOURCE = "resource"  # a resource brought to one person (resource.proposed.v1)
    CHECKIN = "checkin"  # "did you meet?", a while after the introduction
    CHECKIN_AGAIN = "checkin_again"  # the one reminder after a "not yet"


class DeliveryData(_Model):
    delivery_id: UUID
    proposal_id: UUID
    recipient: ContactRef
    channel: ChannelType
    attempts: int = Field(ge=1)
    kind: DeliveryKind = DeliveryKind.INTRO


class DeliveryFailureData(DeliveryData):
    reason: str
    permanent: bool


class OptOutData(ContactRef):
    # "unsubscribe": a signed link (notifier); "request": POST /v1/contacts/.../opt-out (ingest).
    reason: Literal["unsubscribe", "request"] = "unsubscribe"


PreferenceField = Literal[
    "paused_until", "cap_per_week", "language", "opted_in", "cap_per_month", "channel_order"
]


# A person's own caps (their preferences page, or ingest's POST .../preferences on their behalf).
WeeklyCap = Annotated[int, Field(ge=1, le=100)]
MonthlyCap = Annotated[int, Field(ge=1, le=400)]


def _distinct_channels(order: list[ChannelType] | None) -> list[ChannelType] | None:
    if order is not None and len(set(order)) != len(order):
        raise ValueError("each channel type at most once")
    return order


class PreferencesData(ContactRef):
    """The person changed their own preferences (the notifier's preferences page, or ingest's
    `POST /v1/contacts/{source}/{external_id}/preferences` on their behalf): only the
    fields named in `changed` are meant; the others are left as they are. Fields added later
    (`cap_per_month`, `channel_order`) are optional, so older events still read."""

    changed: list[PreferenceField] = Field(min_length=1, max_length=6)
    # No introductions until then; null: not paused (any earlier pause of theirs ends).
    paused_until: AwareDatetime | None = None
    # At most this many introductions a week (never above the operator's cap); null: the cap.
    cap_per_week: WeeklyCap | None = None
    language: LanguageTag | None = None
    # When they chose to receive introductions again after unsubscribing.
    opted_in_at: AwareDatetime | None = None
    # At most this many introductions in a rolling month (30 days); null: no monthly cap.
    cap_per_month: MonthlyCap | None = None
    # Their channel types, first choice first (`in_preferred_order`); null or empty: the
    # integration's order.
    channel_order: Annotated[
        list[ChannelType] | None,
        Field(max_length=len(ChannelType)),
        AfterValidator(_distinct_channels),
    ] = None


def in_preferred_order(
    channels: Sequence[ChannelAddress], order: Sequence[ChannelType] | Sequence[str] | None
) -> list[ChannelAddress]:
    """A person's channels in their own order (`PreferencesData.channel_order`): the types they
    ranked first, by rank; the others after, as the integration listed them. Stable, so two
    channels of one type keep their order. The matcher presents participants so (their messages
    and fallbacks follow it); the notifier's preferences page shows them so."""
    if not order:
        return list(channels)
    rank = {str(kind): i for i, kind in enumerate(order)}
    return sorted(channels, key=lambda c: rank.get(c.type.value, len(rank)))


class ErasureData(ContactRef):
    """Erase this person everywhere (DELETE /v1/contacts/{source}/{external_id})."""


class MergeData(_Model):
    """Identity resolution joined two contacts into one person: `merged` (the identities of the
    absorbed contact) now belong to the contact known by `into`. Undone by contact.unmerged.v1."""

    merge_id: UUID
    into: list[ContactRef] = Field(min_length=1)
    merged: list[ContactRef] = Field(min_length=1)
    # What the identities shared: an email address, or a chat handle on the same platform.
    matched_on: Literal["email", "chat_handle"]


class UnmergeData(_Model):
    """An operator undid merge `merge_id` (`roac contacts unmerge`): `restored` are one person
    again, `remaining` another, and they are never merged automatically again."""

    merge_id: UUID
    remaining: list[ContactRef] = Field(min_length=1)
    restored: list[ContactRef] = Field(min_length=1)


class CheckinAnswer(StrEnum):
    """What a participant answered to "did you meet?" (a "not yet" stays in the notifier)."""

    MET = "met"
    DIDNT_HAPPEN = "didnt_happen"
    NOT_FOR_ME = "not_for_me"  # never introduce this group again


class IntroFeedbackData(ContactRef):
    """A participant's answer to their check-in (`source`/`external_id`: who answered), and the
    rating they gave on the page that followed. `respondent` is their position among the
    introduction's participants: a later event of the same respondent replaces the earlier
    (a rating added after the answer)."""

    proposal_id: UUID
    respondent: int = Field(ge=0, le=5)
    outcome: CheckinAnswer
    rating: int | None = Field(default=None, ge=1, le=5)


class DeliveryJobData(_Model):
    """The notifier's own work item: attempt delivery `delivery_id` (generation guards against
    stale duplicates of a job that was rescheduled since)."""

    delivery_id: UUID
    generation: int = Field(ge=0)


class Consequence(TypedDict):
    """The envelope fields an event caused by another takes from it (`Envelope.consequence`)."""

    correlation_id: str
    causation_id: UUID
    integration: str | None


class Envelope(_Model):
    """What every event carries besides its payload. `source` is the service that produced it."""

    message_id: UUID = Field(default_factory=uuid4)
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    source: Literal["ingest", "matcher", "notifier"]
    # One token (letters, digits, `._:-`): it is logged, and a publisher other than ingest (any
    # holder of write access to the exchange), or a row stored before ingest checked it, could
    # hold a line break or a NUL; such a value is replaced by a token derived from it.
    correlation_id: Annotated[
        str, BeforeValidator(correlation_token), StringConstraints(pattern=CORRELATION_ID_PATTERN)
    ]
    causation_id: UUID | None = None
    # Which integration (API key name) sent it; set by ingest, carried along by the others.
    integration: str | None = None
    # From a bulk import (`roac import`, header X-Roac-Bulk): the matcher applies it but
    # proposes nothing at once; the next round (POST /v1/rounds) matches it. Never floods people.
    bulk: bool = False

    def consequence(self) -> Consequence:
        """The envelope fields of an event this one caused: the same correlation id and
        integration, and this event as its cause (`causation_id`)."""
        return {
            "correlation_id": self.correlation_id,
            "causation_id": self.message_id,
            "integration": self.integration,
        }


class ContactUpserted(Envelope):
    type: Literal["contact.upserted.v1"] = "contact.upserted.v1"
    data: ContactData


class InterestDeclared(Envelope):
    type: Literal["interest.declared.v1"] = "interest.declared.v1"
    data: InterestData


class InterestWithdrawn(Envelope):
    type: Literal["interest.withdrawn.v1"] = "interest.withdrawn.v1"
    data: InterestWithdrawalData


class IntroProposed(Envelope):
    type: Literal["intro.proposed.v1"] = "intro.proposed.v1"
    data: IntroData


class DeliverySucceeded(Envelope):
    type: Literal["delivery.succeeded.v1"] = "delivery.succeeded.v1"
    data: DeliveryData


class DeliveryFailed(Envelope):
    type: Literal["delivery.failed.v1"] = "delivery.failed.v1"
    data: DeliveryFailureData


class ContactOptedOut(Envelope):
    type: Literal["contact.opted_out.v1"] = "contact.opted_out.v1"
    data: OptOutData


class ContactPreferencesChanged(Envelope):
    type: Literal["contact.preferences_changed.v1"] = "contact.preferences_changed.v1"
    data: PreferencesData


class ContactErased(Envelope):
    type: Literal["contact.erased.v1"] = "contact.erased.v1"
    data: ErasureData


class ContactMerged(Envelope):
    type: Literal["contact.merged.v1"] = "contact.merged.v1"
    data: MergeData


class ContactUnmerged(Envelope):
    type: Literal["contact.unmerged.v1"] = "contact.unmerged.v1"
    data: UnmergeData


class ResourceProposed(Envelope):
    type: Literal["resource.proposed.v1"] = "resource.proposed.v1"
    data: ResourceData


class IntroFeedbackGiven(Envelope):
    type: Literal["intro.feedback_given.v1"] = "intro.feedback_given.v1"
    data: IntroFeedbackData


class DeliveryRequested(Envelope):
    type: Literal["delivery.requested.v1"] = "delivery.requested.v1"
    data: DeliveryJobData


Event = Annotated[
    ContactUpserted
    | InterestDeclared
    | IntroProposed
    | DeliverySucceeded
    | DeliveryFailed
    | ContactOptedOut
    | ContactErased
    | DeliveryRequested
    | ResourceProposed
    | ContactMerged
    | ContactUnmerged
    | InterestWithdrawn
    | ContactPreferencesChanged
    | IntroFeedbackGiven,
    Field(discriminator="type"),
]

EVENT_TYPES: tuple[str, ...] = (
    "contact.upserted.v1",
    "interest.declared.v1",
    "intro.proposed.v1",
    "delivery.succeeded.v1",
    "delivery.failed.v1",
    "contact.opted_out.v1",
    "contact.erased.v1",
    "delivery.requested.v1",
    "resource.proposed.v1",
    "contact.merged.v1",
    "contact.unmerged.v1",
    "interest.withdrawn.v1",
    "contact.preferences_changed.v1",
    "intro.feedback_given.v1",
)


class EventBatch(_Model):
    """The body of one AMQP message: one or more events of one type."""

    events: list[Event] = Field(min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _one_type(self) -> EventBatch:
        first = self.events[0].type
        if any(event.type != first for event in self.events):
            raise ValueError("all events of one message must have the same type")
        return self

    @property
    def type(self) -> str:
        return self.events[0].type


_BATCH = TypeAdapter(EventBatch)
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


def encode_batch(events: Sequence[Event]) -> bytes:
    return EventBatch(events=list(events)).model_dump_json().encode()


def encode_event(event: Event) -> bytes:
    return event.model_dump_json().encode()


def batch_body(encoded_events: Sequence[bytes]) -> bytes:
    """The body of one message holding events already encoded one by one (the outbox keeps
    them so, and the relay sends several in one message)."""
    return b'{"events":[' + b",".join(encoded_events) + b"]}"


def decode_event(raw: bytes) -> Event:
    return _EVENT.validate_json(raw)


def decode_batch(raw: bytes) -> EventBatch:
    """Parse a message body; raises pydantic.ValidationError for anything malformed."""
    return _BATCH.validate_json(raw)
