"""Hostile AMQP ingress messages without a broker: control and bidirectional characters in a
field, bodies Python's JSON parser cannot read (too deep, numbers too long), a hostile
message_id or correlation_id. Each is parked with a reason (or its id replaced), counted, and
never crashes the consumer. (Against the live services: tests/e2e/test_hostile_input.py.)"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.ingest.amqp_ingress import Ingress, Outcome, examine
from tests.unit.test_ingress import (
    CONTACT,
    INTEREST,
    LIMIT,
    FakeParker,
    FakePublisher,
    Sleeps,
    message,
    reason,
    valid,
)

BIG = 2_000_000  # the default ROAC_INGEST_MAX_BODY_BYTES is 2 MiB


HOOK = {"type": "webhook", "address": "https://x.org/\x00"}
TWO = {"items": [CONTACT, {**CONTACT, "organization": "N\x85W"}]}


@pytest.mark.parametrize(
    ("routing_key", "body", "field"),
    [
        ("contacts", {**CONTACT, "external_id": "4\x002"}, "external_id"),
        ("contacts", {**CONTACT, "name": "Ada \u202eQuinn"}, "name"),
        ("contacts", TWO, "items[1].organization"),
        ("contacts", {**CONTACT, "channels": [HOOK]}, "channels[0].address"),
        ("contacts", {**CONTACT, "name": "Ada\ud800"}, "name"),  # "\ud800" in JSON
        ("interests", {**INTEREST, "topic": "kites\u2066"}, "topic"),
    ],
)
def test_a_refused_character_in_a_field_parks_the_message_naming_the_field(
    routing_key: str, body: dict[str, Any], field: str
) -> None:
    text = reason(examine(message(body, routing_key), max_body_bytes=LIMIT))
    assert text.startswith(f"1 invalid field: {field}: must not contain control characters")
    assert text.endswith("[unsafe_character]")
    assert "Ada" not in text and "kites" not in text  # never the value
    text.encode()  # an AMQP header: always UTF-8


def test_refused_characters_in_an_unknown_field_s_name_are_escaped_in_the_reason() -> None:
    text = reason(examine(message({**CONTACT, "na\u202eme\x00": 1}), max_body_bytes=LIMIT))
    assert (
        text
        == "1 invalid field: na\\u202eme\\u0000: Extra inputs are not permitted [extra_forbidden]"
    )
    # A lone surrogate in a key: pydantic refuses the body itself.
    text = reason(examine(message({**CONTACT, "name\ud800": 1}), max_body_bytes=LIMIT))
    assert text.startswith("1 invalid field: body: ") and "[string_unicode]" in text
    text.encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[" * 100_000, "body is not JSON roac reads: nested too deep"),
        (b'{"items": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "nested too deep"),
        (b'{"source": "crm", "external_id": ' + b"7" * 5_000 + b"}", "too many digits"),
        (b'{"weight": -' + b"9" * (sys.get_int_max_str_digits() + 1) + b"}", "too many digits"),
        (b'{"source": "crm", "name": "Ad\xc3\x28a"}', "body is not JSON: not UTF-8 text"),
        (b'{"name": "\xed\xa0\x80"}', "body is not JSON: not UTF-8 text"),  # a surrogate
        (b"\xff\xfe{\x00}\x00", "body is not JSON: not UTF-8 text"),  # UTF-16
    ],
    ids=[
        "100k-brackets",
        "deep-items",
        "5000-digits",
        "negative-huge",
        "bad-utf8",
        "surrogate",
        "utf16",
    ],
)
def test_bodies_python_cannot_read_are_invalid_with_a_reason(body: bytes, expected: str) -> None:
    assert expected in reason(examine(message(body), max_body_bytes=BIG))


def test_a_number_just_within_python_s_limit_is_an_ordinary_field_error() -> None:
    body = b'{"source": "crm", "external_id": ' + b"7" * 4_000 + b', "name": "A"}'
    text = reason(examine(message(body), max_body_bytes=BIG))
    assert text.startswith("1 invalid field: external_id: ") and "7777" not in text


@pytest.mark.parametrize("message_id", ["m-1\nforged log line", "m\x00", "m-\u202e1"], ids=repr)
def test_a_message_id_with_refused_characters_is_invalid(message_id: str) -> None:
    text = reason(examine(message(CONTACT, message_id=message_id), max_body_bytes=LIMIT))
    assert text.startswith("the message_id property must not contain control characters")


@pytest.mark.parametrize("correlation_id", ["abc\nevil", "abc\n", "good-id junk", "x" * 129])
def test_a_correlation_id_not_a_whole_token_is_replaced(correlation_id: str) -> None:
    found = valid(examine(message(CONTACT, correlation_id=correlation_id), max_body_bytes=LIMIT))
    assert found.correlation_id not in (correlation_id, correlation_id.split()[0], "m-1")
    assert len(found.correlation_id) == 36  # a fresh UUID, as for an invalid X-Correlation-ID


def _count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("roac_ingest_ingress_messages_total", {"outcome": outcome})
    return value or 0.0


async def test_hostile_messages_are_parked_and_counted_and_a_valid_one_still_accepted() -> None:
    publisher, parker = FakePublisher(), FakeParker()
    ingress = Ingress(publisher, parker, max_body_bytes=BIG, sleep=Sleeps())
    parked_before, accepted_before = _count("parked"), _count("accepted")
    hostile = [
        message(b"[" * 100_000),
        message(b'{"external_id": ' + b"1" * 5_000 + b"}"),
        message(b"\xff\xfe"),
        message({**CONTACT, "name": "\u202eAda"}),
        message({**INTEREST, "topic": "a\x00b"}, "interests"),
    ]
    for poison in hostile:
        assert await ingress.handle(poison) is Outcome.PARKED
    assert await ingress.handle(message(CONTACT, message_id="m-2")) is Outcome.ACCEPTED
    assert len(parker.parked) == len(hostile) and len(publisher.published) == 1
    assert _count("parked") - parked_before == len(hostile)
    assert _count("accepted") - accepted_before == 1


async def test_a_bug_while_judging_a_message_rejects_it_and_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr("services.ingest.amqp_ingress.examine", broken)
    ingress = Ingress(FakePublisher(), FakeParker(), max_body_bytes=LIMIT, sleep=Sleeps())
    before = _count("rejected")
    assert await ingress.handle(message(CONTACT)) is Outcome.REJECTED
    assert _count("rejected") - before == 1
