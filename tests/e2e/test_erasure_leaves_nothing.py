"""Erasure leaves nothing, end to end: after DELETE /v1/contacts/{source}/{external_id} of a
person with a non-ASCII external id, a name, an email address and a Slack id, who was introduced
and then left unplaced by a round, and whose old unsubscribe link is clicked afterwards, none of
their identifiers is in any text, json(b), array or bytea column of any schema (found through
information_schema, not a list), in the parking queues' bodies and headers, or in the services'
logs; the link answers a neutral page and stores and publishes nothing. Nor is any unkeyed
SHA-256 digest of their identifiers left (a digest of so guessable a text names them too): the
legacy tombstone, the matcher's match keys of their email and Slack id, or the plain fingerprint
of their keyed erasure request; only HMACs under ROAC_ERASURE_KEY may be."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any
from urllib.parse import quote

import aio_pika
import asyncpg
import httpx
import pytest

from services.notifier.links import LinkKeyring, LinkMaker
from shared.erasure import erasure_digest, legacy_digest
from shared.parking import PARKING_QUEUES
from tests.e2e.conftest import Stack, new_person, run_id, zone_at
from tests.support.infra import API_KEY, ERASURE_KEY, LINK_KEY

pytestmark = pytest.mark.e2e

TEXT_TYPES = ("text", "character varying", "character", "jsonb", "json", "ARRAY", "USER-DEFINED")


def _forms(needle: str) -> list[str]:
    """The needle as stored and as JSON with \\u escapes (json.dumps' default)."""
    escaped = json.dumps(needle)[1:-1]
    return [needle] if escaped == needle else [needle, escaped]


async def _database_hits(database_url: str, needles: list[str], digests: list[bytes]) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch(
            """
            SELECT table_schema, table_name, column_name, data_type
            FROM information_schema.columns c
            JOIN information_schema.tables t USING (table_schema, table_name)
            WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
              AND t.table_type = 'BASE TABLE'
              AND (data_type = ANY($1::text[]) OR data_type = 'bytea')
            ORDER BY 1, 2, 3
            """,
            list(TEXT_TYPES),
        )
        tables = {(c["table_schema"], c["table_name"]) for c in columns}
        assert {("messaging", "inbox"), ("messaging", "outbox"), ("matcher", "rounds")} <= tables
        assert {s for s, _ in tables} >= {"matcher", "notifier", "messaging", "ingest", "access"}
        found = []
        for c in columns:
            table = f'"{c["table_schema"]}"."{c["table_name"]}"'
            column = f'"{c["column_name"]}"'
            probes: list[tuple[str, str | bytes]]
            if c["data_type"] == "bytea":
                probes = [
                    (f"position($1::bytea in {column}) > 0", f.encode())
                    for n in needles
                    for f in _forms(n)
                ]
                # Anywhere in the value: a digest may be kept inside a longer one.
                probes += [(f"position($1::bytea in {column}) > 0", d) for d in digests]
            else:
                probes = [
                    (f"strpos(lower({column}::text), lower($1)) > 0", f)
                    for n in needles
                    for f in _forms(n)
                ]
            for condition, value in probes:
                # Identifiers from information_schema, quoted; the needle is a parameter.
                hits = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {condition}", value)  # noqa: S608
                if hits:
                    found.append(f"{table}.{column} holds {value!r} ({hits} rows)")
        return found
    finally:
        await conn.close()


async def _parked(amqp_url: str) -> list[str]:
    """Every parked message's body and headers, read without taking them: nothing is acked,
    and closing the channel puts them back."""
    connection = await aio_pika.connect(amqp_url)
    seen: list[str] = []
    try:
        channel = await connection.channel()
        for name in PARKING_QUEUES:
            queue = await channel.declare_queue(name, passive=True)
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                seen.append(message.body.decode("utf-8", errors="replace"))
                seen.append(json.dumps(message.headers, default=str, ensure_ascii=False))
                seen.append(f"{message.correlation_id} {message.message_id}")
        await channel.close()
    finally:
        await connection.close()
    return seen


def _wait(check: Any, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return bool(check())


def _query(stack: Stack, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.infra.database_url)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(run())


def _accepted(response: httpx.Response) -> None:
    assert response.status_code == 202, response.text


def _erased_person_counter(stack: Stack) -> float:
    text = httpx.get(f"{stack.notifier_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('roac_notifier_answers_total{answer="erased"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _sha256(text: bytes) -> bytes:
    return hashlib.sha256(text).digest()


def _unkeyed_digests(
    external_id: str, email: str, slack_id: str, erasure_paths: list[str]
) -> list[bytes]:
    """Plain SHA-256 digests of a person's identifiers that roac computes or once stored: the
    legacy tombstone, the matcher's match keys (services/matcher/identity_keys.py, exactly as
    it hashes them), and the fingerprint a keyed request of theirs had before it was an HMAC
    (services/ingest/idempotency.py: method, path, body; the path in each form it may be
    taken in). Written out here, not imported: the probe must not move with the code."""
    digests = [
        legacy_digest("e2e", external_id),
        _sha256(f"email:{email.strip().lower()}".encode()),
        _sha256(f"slack:{slack_id.strip().upper()}".encode()),
    ]
    digests += [_sha256(b"DELETE " + path.encode() + b"\n" + b"") for path in erasure_paths]
    return digests


def test_nothing_of_an_erased_person_is_left_anywhere(stack: Stack) -> None:
    run = run_id()
    tag = f"solo{run}"
    external_id = f"Zoë-{run}-東京"
    slack_id = f"U{run.upper()}Q"
    person: dict[str, Any] = {
        "source": "e2e",
        "external_id": external_id,
        "name": f"Ådne Ørsted {run}",
        "email": f"zoe.{run}@example.org",
        "organization": f"Øresund Kites {run}",
        "timezone": zone_at(12),
        "channels": [{"type": "slack", "address": slack_id}],
        "tags": [tag],
    }
    partner = new_person(run, 1, tags=[tag])
    topic = f"kite repair {run}"
    with stack.client() as client:
        # Five unrelated people with a hobby each: a shared topic is rare only among many.
        others = [new_person(run, i) for i in range(10, 15)]
        _accepted(client.post("/v1/contacts", json={"items": others}))
        for other in others:
            body = {
                "source": "e2e",
                "external_id": other["external_id"],
                "topic": f"hobby {other['external_id']}",
            }
            _accepted(client.post("/v1/interests", json=body))
        _accepted(client.post("/v1/contacts", json={"items": [person, partner]}))
        for who in (person, partner):
            body = {
                "source": "e2e",
                "external_id": who["external_id"],
                "topic": topic,
                "kind": "likes",
            }
            _accepted(client.post("/v1/interests", json=body))
        assert stack.sink.wait_for(person["email"], within=15), "no introduction to erase"

    # A round over just the two of them: already introduced, so both stay unplaced.
    matcher = httpx.Client(
        base_url=stack.matcher_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    )
    with matcher:
        pool = {"name": f"solo-{run}", "selector": {"tags": [tag]}, "group_size": 2}
        assert matcher.post("/v1/pools", json=pool).status_code in (200, 201), "pool"
        started = matcher.post("/v1/rounds", json={"pool": f"solo-{run}", "group_size": 2})
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        assert _wait(lambda: matcher.get(location).json()["status"] == "done", within=30)
        stats = matcher.get(location).json()["stats"]
    assert external_id in json.dumps(stats, ensure_ascii=False), "the round did not list them"

    public = stack.env["ROAC_PUBLIC_URL"]
    links = LinkMaker(public, LinkKeyring([("t1", LINK_KEY.encode())]))
    unsubscribe = links.unsubscribe("e2e", external_id, time.time())

    # Erased with an Idempotency-Key, as a careful integration retries: the key's row is kept
    # for a day and must not name them, neither its path nor a plain digest of it.
    erasure_path = f"/v1/contacts/e2e/{quote(external_id, safe='')}"
    erasure_key = f"erase-{run}"
    with stack.client() as client:
        _accepted(client.delete(erasure_path, headers={"Idempotency-Key": erasure_key}))
    digest = erasure_digest("e2e", external_id, ERASURE_KEY.encode())
    assert _wait(
        lambda: bool(
            _query(stack, "SELECT 1 FROM matcher.erasures WHERE digest = $1", digest)
            and _query(stack, "SELECT 1 FROM notifier.erasures WHERE digest = $1", digest)
        )
    ), "the erasure was not applied by both services"

    # Their old unsubscribe link, clicked after the erasure: a neutral page, nothing done.
    erased_answers = _erased_person_counter(stack)
    page = httpx.get(unsubscribe, timeout=10)
    assert page.status_code == 200 and "Nothing more to do" in page.text
    answered = httpx.post(unsubscribe, timeout=10)
    assert answered.status_code == 200 and "Nothing more to do" in answered.text
    assert _erased_person_counter(stack) == erased_answers + 1
    time.sleep(2)  # anything the click had enqueued would be relayed and applied by now

    needles = [external_id, person["name"], person["email"], slack_id, person["organization"]]
    # Only keyed digests may be stored; the path as sent and as decoded.
    plain = _unkeyed_digests(
        external_id, person["email"], slack_id, [erasure_path, f"/v1/contacts/e2e/{external_id}"]
    )
    kept_request = _query(
        stack,
        "SELECT fingerprint FROM ingest.idempotency_keys WHERE key = $1 AND state = 'done'",
        erasure_key,
    )
    assert kept_request, "the keyed erasure left no idempotency row to look at"
    hex_forms = [d.hex() for d in plain]  # as text, in a log line or a json column
    leftovers = asyncio.run(_database_hits(stack.infra.database_url, needles + hex_forms, plain))
    assert leftovers == []
    # The scan sees personal data where there is some: the partner is still there, and so is
    # the match key of their email (a plain digest: the probe for digests finds them).
    kept = asyncio.run(
        _database_hits(
            stack.infra.database_url,
            [partner["email"]],
            [_sha256(f"email:{partner['email'].lower()}".encode())],
        )
    )
    assert any(partner["email"] in hit for hit in kept), "the scan found no text: untrusted"
    assert any("match_keys" in hit for hit in kept), "the scan found no digest: untrusted"

    parked = asyncio.run(_parked(stack.infra.amqp_url))
    for needle in needles:
        for form in _forms(needle):
            assert not [p for p in parked if form.lower() in p.lower()], (needle, "parked")

    for proc in stack.processes:
        log = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
        for needle in needles:
            for form in _forms(needle):
                assert form.lower() not in log.lower(), (proc.name, needle)
    # Nor a plain hash of their id in any log line (a digest is an identifier too).
    for proc in stack.processes:
        log = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
        assert hashlib.sha256(f"e2e\x00{external_id}".encode()).hexdigest() not in log
        for hex_digest in hex_forms:
            assert hex_digest not in log.lower(), (proc.name, "an unkeyed digest")
