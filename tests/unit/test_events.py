import re
from uuid import uuid4

import pytest
from pydantic import ValidationError

from services.ingest.schemas import InboundChannel
from shared.events import (
    ChannelAddress,
    ChannelType,
    ContactData,
    ContactUpserted,
    EventBatch,
    InterestData,
    InterestDeclared,
    Participant,
    decode_batch,
    encode_batch,
)
from shared.topics import normalize_topic


def _interest(topic: str = "Kites") -> InterestDeclared:
    return InterestDeclared(
        source="ingest",
        correlation_id="c-1",
        data=InterestData(source="crm", external_id="42", topic=topic),
    )


def test_a_batch_round_trips_through_its_wire_format() -> None:
    events = [_interest("Kites"), _interest("Bees")]
    batch = decode_batch(encode_batch(events))
    assert batch.type == "interest.declared.v1"
    assert [e.message_id for e in batch.events] == [e.message_id for e in events]
    assert batch.events[0] == events[0]


def test_a_batch_holds_one_type_only() -> None:
    contact = ContactUpserted(
        source="ingest",
        correlation_id="c",
        data=ContactData(source="crm", external_id="1", name="A"),
    )
    with pytest.raises(ValidationError, match="same type"):
        EventBatch(events=[_interest(), contact])


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"{}", b'{"events": []}', b'{"events": [{"type": "nope.v1"}]}'],
)
def test_malformed_bodies_are_rejected(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        decode_batch(raw)


def test_topics_are_normalised() -> None:
    assert normalize_topic("  Social   Customer\tService ") == "social customer service"
    assert normalize_topic("Cafe\u0301") == normalize_topic("Café")  # NFC
    assert _interest(" Social  Customer Service").data.topic == "social customer service"


def test_blank_topics_and_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        InterestData(source="crm", external_id="1", topic="   ")
    with pytest.raises(ValidationError):
        InterestData.model_validate(
            {"source": "crm", "external_id": "1", "topic": "x", "colour": "red"}
        )


@pytest.mark.parametrize("name", ["Eve\r\nBcc: all@example.org", "Eve\x00"])
def test_names_cannot_smuggle_header_lines(name: str) -> None:
    with pytest.raises(ValidationError):
        ContactData(source="crm", external_id="1", name=name)


@pytest.mark.parametrize(
    "correlation_id", ["c\nforged: line", "c\x00", "c 1", "c\u202e", "x" * 129]
)
def test_an_envelope_replaces_a_correlation_id_that_is_not_one_token(correlation_id: str) -> None:
    # Whoever published it (not only ingest, which mints or keeps a sane one): it is logged,
    # and an event is never lost over it. The same value always becomes the same token.
    document = {
        "source": "ingest",
        "correlation_id": correlation_id,
        "data": {"source": "crm", "external_id": "1", "topic": "kites"},
    }
    kept = InterestDeclared.model_validate(document).correlation_id
    assert kept.startswith("replaced-")
    assert kept == InterestDeclared.model_validate(document).correlation_id
    document["correlation_id"] = "round:1.2-3_4"
    assert InterestDeclared.model_validate(document).correlation_id == "round:1.2-3_4"


def test_an_introduction_read_again_has_refused_characters_replaced() -> None:
    # A name the matcher wrote (or a row stored before the rule): shown, not lost.
    participant = Participant(
        source="crm",
        external_id="1",
        name="Nul \x00 Name\u202e",
        channels=[ChannelAddress(type=ChannelType.EMAIL, address="a@example.org")],
    )
    assert participant.name == "Nul \ufffd Name\ufffd"


def test_time_zones_and_sources_are_checked() -> None:
    assert ContactData(source="crm", external_id="1", name="A", timezone="Europe/Berlin").timezone
    with pytest.raises(ValidationError):
        ContactData(source="crm", external_id="1", name="A", timezone="Mars/Olympus")
    with pytest.raises(ValidationError):
        ContactData(source="CRM with spaces", external_id="1", name="A")


def test_weight_must_be_positive_and_bounded() -> None:
    with pytest.raises(ValidationError):
        InterestData(source="crm", external_id="1", topic="x", weight=0)
    with pytest.raises(ValidationError):
        InterestData(source="crm", external_id="1", topic="x", weight=11)


def test_event_ids_are_unique() -> None:
    assert _interest().message_id != _interest().message_id
    assert isinstance(_interest().causation_id, type(None) | type(uuid4()))


@pytest.mark.parametrize(
    "room",
    [
        "!abc:example.org",
        "!a7G9ApKyRNROXlR-CORDHmUsA39SUdFv5iFQGG3UMbs",  # room version 12 (Synapse 1.163's default)
        "!opaque_id-1:matrix.example.org:8448",
    ],
)
def test_matrix_room_ids_of_every_room_version_are_addresses(room: str) -> None:
    assert ChannelAddress(type=ChannelType.MATRIX, address=room).address == room


@pytest.mark.parametrize(
    "room", ["abc:example.org", "!", "!has space", "#alias:example.org", "!a:"]
)
def test_what_is_not_a_matrix_room_id_is_refused(room: str) -> None:
    with pytest.raises(ValueError, match="room id"):
        ChannelAddress(type=ChannelType.MATRIX, address=room)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T0/B0/x",
        "https://prod-12.westus.logic.azure.com:443/workflows/x?a=1",
        "https://bücher.example/x",
        "https://[2001:db8::1]:8443/hook",
        "https://a_b.example/",
    ],
)
def test_webhook_addresses_are_urls_a_client_can_request(url: str) -> None:
    assert InboundChannel(type=ChannelType.WEBHOOK, address=url).address == url


BAD_URLS = [
    ("https://a..b/", "valid host name"),
    ("https://exa mple.org/", "valid host name"),
    ("https://-a.org/", "valid host name"),
    ("https://example.org:99999/", "port from 1 to 65535"),
    ("https://example.org:0/", "port from 1 to 65535"),
]


@pytest.mark.parametrize(("url", "problem"), [*BAD_URLS, ("ftp://example.org/", "http(s) URL")])
def test_what_no_client_could_request_is_refused_at_the_door(url: str, problem: str) -> None:
    # Once accepted, and then retried at every send as if the network were down.
    with pytest.raises(ValidationError, match=re.escape(problem)):
        InboundChannel(type=ChannelType.DISCORD, address=url)


@pytest.mark.parametrize(("url", "problem"), BAD_URLS)
def test_an_address_stored_before_the_rule_is_still_read_back(url: str, problem: str) -> None:
    # An introduction holding it must not become unreadable: its delivery fails, not the rest.
    assert ChannelAddress(type=ChannelType.DISCORD, address=url).address == url
