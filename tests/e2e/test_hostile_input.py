"""Hostile input against the live services (issue 17, "hostile input contained"): a NUL, ESC,
DEL, a C1 control (U+0085), a right-to-left override (U+202E), a left-to-right isolate
(U+2066), a left-to-right mark (U+200E) or a line feed in each string field of a contact and an
interest is a 422 naming the field over HTTP, and is parked in roac.ingest.ingress.dlq with a
reason naming it over the AMQP ingress (routing keys `contacts`, `interests` and
`interests.withdraw`); bodies Python's JSON parser cannot read (100,000 nested `[`, a
5,000-digit number, invalid UTF-8) are a 400 over HTTP and parked over AMQP; a correlation id is
kept only when it is one whole token; and a valid message published after all of them is still
applied: the ingress consumer survives them. (Path, query and the operator routes' body fields:
test_hostile_input_more.py; the rule itself: tests/unit/test_text_safety.py.)"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from shared.topology import INGRESS_EXCHANGE, INGRESS_QUEUE
from tests.e2e.conftest import Stack, new_person, run_id
from tests.support.amqp import connect, drain, tap
from tests.support.infra import API_KEY

pytestmark = pytest.mark.e2e

# One of each family shared/text_safety.py refuses: C0, ESC, DEL, C1 (NEXT LINE), a
# bidirectional override, an isolate and a mark, and a line feed (every field is single-line).
CHARS = {
    "nul": "\x00",
    "esc": "\x1b",
    "del": "\x7f",
    "nel": "\x85",
    "rlo": "\u202e",
    "lri": "\u2066",
    "lrm": "\u200e",
    "lf": "\n",
}
Loc = tuple[str | int, ...]
# Every string field of a contact and of an interest, by its place in the body. The last ones
# of each are an enum or a date: refused by their own type, but named all the same.
CONTACT_FIELDS: list[Loc] = [
    ("source",),
    ("external_id",),
    ("name",),
    ("email",),
    ("organization",),
    ("timezone",),
    ("channels", 0, "address"),
    ("tags", 0),
    ("blocks", 0, "source"),
    ("blocks", 0, "external_id"),
    ("channels", 0, "type"),
    ("snoozed_until",),
]
INTEREST_FIELDS: list[Loc] = [("source",), ("external_id",), ("topic",), ("kind",)]
# (routing key / path, field, character name): one case each, over HTTP and over AMQP.
CASES = [
    (kind, loc, char)
    for kind, fields in (("contacts", CONTACT_FIELDS), ("interests", INTEREST_FIELDS))
    for loc in fields
    for char in CHARS
]
# A withdrawal has no HTTP body (DELETE /v1/interests/..., its path and query: the other file),
# but over AMQP it is a body like an interest's.
AMQP_CASES = CASES + [
    ("interests.withdraw", loc, char) for loc in INTEREST_FIELDS for char in CHARS
]
# A person's id in a path, a line feed included: `{external_id:person_id}` matches any
# character (shared/person_path.py), so the field's rule answers, never a 404.
PATH_CHARS = list(CHARS)
# A body Python cannot read, and what the parked copy's reason says about it.
UNREADABLE = {
    "deep": (b"[" * 100_000, "nested too deep"),
    "digits": (b'{"source": "e2e", "external_id": ' + b"7" * 5_000 + b"}", "too many digits"),
    "utf8": (b'{"source": "e2e", "external_id": "\xc3\x28", "name": "x"}', "not UTF-8 text"),
}


def dotted(loc: Loc) -> str:
    """`channels[0].address`, as the problem documents and reasons name a field."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def case_id(value: object) -> str:
    return dotted(value) if isinstance(value, tuple) else str(value)


def contact(run: str) -> dict[str, Any]:
    """A valid contact with every string field filled in."""
    return new_person(
        run,
        0,
        channels=[{"type": "webhook", "address": "https://example.org/hook"}],
        tags=["hostile"],
        blocks=[{"source": "e2e", "external_id": f"{run}-9"}],
        snoozed_until="2030-01-01T00:00:00+00:00",
    )


def interest(run: str) -> dict[str, Any]:
    return {"source": "e2e", "external_id": f"{run}-0", "topic": "kites", "kind": "likes"}


def hostile(kind: str, loc: Loc, char: str, run: str) -> dict[str, Any]:
    """A valid item whose field at `loc` holds `char` in its middle (before an email's @)."""
    item = deepcopy(contact(run) if kind == "contacts" else interest(run))  # or a withdrawal
    target: Any = item
    for part in loc[:-1]:
        target = target[part]
    value = target[loc[-1]]
    middle = value.index("@") if "@" in value else len(value) // 2
    target[loc[-1]] = value[:middle] + CHARS[char] + value[middle:]
    return item


def problems(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == response.status_code
    return {e["field"]: e["message"] for e in body["errors"]}


def code_point(char: str) -> str:
    return f"U+{ord(CHARS[char]):04X}"


# --- HTTP ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "loc", "char"), CASES, ids=case_id)
def test_http_refuses_the_character_in_each_field_naming_it(
    stack: Stack, kind: str, loc: Loc, char: str
) -> None:
    run = run_id()
    with stack.client() as client:
        single = client.post(f"/v1/{kind}", json=hostile(kind, loc, char, run))
        assert single.status_code == 422, single.text
        found = problems(single)
        assert list(found) == [dotted(loc)]
        if loc[-1] not in ("type", "snoozed_until", "kind"):
            assert code_point(char) in found[dotted(loc)]
        batch = client.post(f"/v1/{kind}", json={"items": [hostile(kind, loc, char, run)]})
        assert batch.status_code == 422
        assert list(problems(batch)) == [f"items[0].{dotted(loc)}"]


@pytest.mark.parametrize("char", PATH_CHARS)
@pytest.mark.parametrize("method", ["DELETE", "POST"])
def test_a_person_in_the_path_refuses_them_too(stack: Stack, method: str, char: str) -> None:
    encoded = CHARS[char].encode().hex("%").upper()  # %00, %E2%80%AE
    path = f"/v1/contacts/e2e/ab%{encoded}cd" + ("/opt-out" if method == "POST" else "")
    with stack.client() as client:
        response = client.request(method, path)
    assert response.status_code == 422, response.text
    assert list(problems(response)) == ["path.external_id"]


# Every route of the matcher and the notifier naming a person in its path.
PERSON_ROUTES = [
    ("matcher", "GET", ""),
    ("matcher", "GET", "/identity"),
    ("matcher", "GET", "/profile"),
    ("matcher", "POST", "/unmerge"),
    ("matcher", "POST", "/blocks"),
    ("notifier", "GET", "/intros"),
]


@pytest.mark.parametrize("char", PATH_CHARS)
@pytest.mark.parametrize(("service", "method", "suffix"), PERSON_ROUTES)
def test_the_matcher_s_and_notifier_s_person_paths_refuse_them_too(
    stack: Stack, service: str, method: str, suffix: str, char: str
) -> None:
    # Once a 500: the NUL reached PostgreSQL, and an override was looked up, not refused.
    encoded = CHARS[char].encode().hex("%").upper()
    base = stack.matcher_url if service == "matcher" else stack.notifier_url
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"confirm": True, "source": "e2e", "external_id": "x"} if method == "POST" else None
    response = httpx.request(
        method,
        f"{base}/v1/contacts/e2e/ab%{encoded}cd{suffix}",
        json=body,
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert "path.external_id" in problems(response), response.text
    assert CHARS[char] not in response.text


def test_a_person_s_id_in_a_path_is_trimmed_alike_in_every_service(stack: Stack) -> None:
    # As ContactRef trims it: ingest erased "42" for `%2042%20` while the others looked up " 42 ".
    person = new_person(run_id(), 0)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with stack.client() as client:
        assert client.post("/v1/contacts", json=person).status_code == 202
    padded = f"/v1/contacts/e2e/%20{person['external_id']}%20"
    deadline = time.monotonic() + 10
    while (
        answer := httpx.get(f"{stack.matcher_url}{padded}/identity", headers=headers)
    ).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text
    intros = httpx.get(f"{stack.notifier_url}{padded}/intros", headers=headers)
    assert intros.status_code == 200, intros.text
    only_spaces = httpx.get(f"{stack.matcher_url}/v1/contacts/e2e/%20%20/identity", headers=headers)
    assert only_spaces.status_code == 422


RESOURCE = {"url": "https://example.org/", "title": "t", "topics": ["k"]}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/resources", {**RESOURCE, "url": "https://example.org/\x00"}, "url"),
        ("/v1/resources", {**RESOURCE, "title": "\u202et"}, "title"),
        ("/v1/resources", {**RESOURCE, "topics": ["k\x00"]}, "topics[0]"),
        (
            "/v1/pools",
            {"name": "p", "selector": {"organizations": ["N\u202eW"]}},
            "selector.organizations[0]",
        ),
    ],
)
def test_the_matcher_s_request_bodies_refuse_them_too(
    stack: Stack, path: str, body: dict[str, Any], field: str
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    response = httpx.post(f"{stack.matcher_url}{path}", json=body, headers=headers, timeout=30)
    assert response.status_code == 422, response.text
    assert list(problems(response)) == [field]


@pytest.mark.parametrize("name", UNREADABLE)
def test_http_answers_a_body_python_cannot_read_with_a_400(stack: Stack, name: str) -> None:
    body, _ = UNREADABLE[name]
    json_type = {"content-type": "application/json"}
    with stack.client() as client:
        for path in ("/v1/contacts", "/v1/interests"):
            response = client.post(path, content=body, headers=json_type)
            assert response.status_code == 400, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
    headers = {**json_type, "Authorization": f"Bearer {API_KEY}"}
    response = httpx.post(
        f"{stack.matcher_url}/v1/resources", content=body, headers=headers, timeout=30
    )
    # The matcher's body limit is smaller: 100,000 brackets are a 413 there before parsing.
    assert response.status_code in (400, 413), response.text


@pytest.mark.parametrize("sent", ["good-id junk", "abc\tevil", "abc def\tghi"])
def test_http_keeps_a_correlation_id_only_when_whole(stack: Stack, sent: str) -> None:
    with stack.client(headers={"X-Correlation-ID": sent}) as client:
        response = client.post("/v1/contacts", json=new_person(run_id(), 0))
    assert response.status_code == 202
    kept = response.headers["x-correlation-id"]
    assert kept == response.json()["correlation_id"]
    assert uuid.UUID(kept) and kept != sent.split()[0]  # a fresh one, not a prefix


# --- AMQP ------------------------------------------------------------------------------------


@dataclass
class IngressRun:
    """What one burst of hostile messages, then valid ones, did to the live ingress."""

    run: str
    reasons: dict[str, str]  # parked message id -> x-roac-reason
    events: list[dict[str, Any]]  # contact.upserted.v1 events of the run
    parked_delta: float
    valid_ids: list[str]


def message_id(run: str, kind: str, loc: Loc, char: str) -> str:
    return f"{run}-{kind}-{dotted(loc)}-{char}"


def _metric(url: str, name: str, **labels: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _burst(stack: Stack, run: str) -> IngressRun:
    hostile_messages: list[tuple[str, str, bytes, str | None]] = []
    for kind, loc, char in AMQP_CASES:
        body = json.dumps(hostile(kind, loc, char, run)).encode()
        hostile_messages.append((kind, message_id(run, kind, loc, char), body, None))
    for name, (body, _) in UNREADABLE.items():
        hostile_messages.append(("contacts", f"{run}-unreadable-{name}", body, None))
    valid_ids = [f"{run}-valid-0", f"{run}-valid-1", f"{run}-valid-2"]
    valid = [
        ("contacts", valid_ids[0], json.dumps(new_person(run, 1)).encode(), "abc\nevil"),
        ("contacts", valid_ids[1], json.dumps(new_person(run, 2)).encode(), "good-id junk"),
        ("contacts", valid_ids[2], json.dumps(new_person(run, 3)).encode(), f"corr-{run}"),
    ]
    parked_before = _metric(
        stack.ingest_url, "roac_ingest_ingress_messages_total", outcome="parked"
    )
    connection = await connect(stack.infra.amqp_url)
    async with connection:
        observed = await tap(connection, "contact.upserted.v1")
        channel = await connection.channel()
        exchange = await channel.get_exchange(INGRESS_EXCHANGE.name)
        for routing_key, mid, body, correlation in hostile_messages + valid:
            await exchange.publish(
                aio_pika.Message(
                    body,
                    message_id=mid,
                    correlation_id=correlation,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
            )
        wanted = {mid for _, mid, _, _ in hostile_messages}
        reasons: dict[str, str] = {}
        parking = await channel.declare_queue(INGRESS_QUEUE.dead_letter_queue, passive=True)
        deadline = time.monotonic() + 60
        while set(reasons) != wanted and time.monotonic() < deadline:
            parked = await parking.get(no_ack=True, fail=False)
            if parked is None:
                await asyncio.sleep(0.1)
            elif parked.message_id in wanted:
                reasons[parked.message_id] = str(parked.headers.get("x-roac-reason"))
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(events) < len(valid) and time.monotonic() < deadline:
            for published in await drain(observed, settle=0.5):
                events += [
                    e
                    for e in json.loads(published.body)["events"]
                    if e["data"]["external_id"].startswith(f"{run}-")
                ]
    parked_after = _metric(stack.ingest_url, "roac_ingest_ingress_messages_total", outcome="parked")
    return IngressRun(run, reasons, events, parked_after - parked_before, valid_ids)


@pytest.fixture(scope="module")
def ingress_run(stack: Stack) -> IngressRun:
    return asyncio.run(_burst(stack, run_id()))


@pytest.mark.parametrize(("kind", "loc", "char"), AMQP_CASES, ids=case_id)
def test_amqp_parks_the_character_in_each_field_with_a_reason_naming_it(
    ingress_run: IngressRun, kind: str, loc: Loc, char: str
) -> None:
    reason = ingress_run.reasons.get(message_id(ingress_run.run, kind, loc, char))
    assert reason is not None, "not parked"
    assert reason.startswith(f"1 invalid field: {dotted(loc)}: "), reason
    if loc[-1] not in ("type", "snoozed_until", "kind"):
        assert code_point(char) in reason and reason.endswith("[unsafe_character]")
    assert CHARS[char] not in reason


@pytest.mark.parametrize("name", UNREADABLE)
def test_amqp_parks_a_body_python_cannot_read_with_a_reason(
    ingress_run: IngressRun, name: str
) -> None:
    reason = ingress_run.reasons.get(f"{ingress_run.run}-unreadable-{name}")
    assert reason is not None, "not parked"
    assert reason.startswith("body is not JSON") and UNREADABLE[name][1] in reason


def test_every_parked_message_is_counted(ingress_run: IngressRun) -> None:
    assert ingress_run.parked_delta >= len(AMQP_CASES) + len(UNREADABLE)


def test_valid_messages_after_them_are_still_applied(ingress_run: IngressRun, stack: Stack) -> None:
    run = ingress_run.run
    by_person = {e["data"]["external_id"]: e for e in ingress_run.events}
    assert sorted(by_person) == [f"{run}-1", f"{run}-2", f"{run}-3"]
    # A correlation_id property is kept only when it is one whole token; otherwise a fresh one.
    assert by_person[f"{run}-3"]["correlation_id"] == f"corr-{run}"
    for replaced in (by_person[f"{run}-1"], by_person[f"{run}-2"]):
        assert uuid.UUID(replaced["correlation_id"])

    async def applied() -> int:
        conn = await asyncpg.connect(stack.infra.database_url)
        try:
            found: int = await conn.fetchval(
                "SELECT count(*) FROM matcher.identities WHERE source = 'e2e' "
                "AND external_id = ANY($1::text[])",
                [f"{run}-1", f"{run}-2", f"{run}-3"],
            )
            return found
        finally:
            await conn.close()

    deadline = time.monotonic() + 20
    while asyncio.run(applied()) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert asyncio.run(applied()) == 3, "the matcher did not apply the valid messages"
    ready = httpx.get(f"{stack.ingest_url}/readyz", timeout=10).json()["checks"]
    assert ready["consumers"] is True
