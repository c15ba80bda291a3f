"""Idempotency-Key against the live ingest: a retry gets the first answer and publishes nothing
new; the same key with a different body is refused."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import httpx
import pytest

from services.ingest.idempotency import legacy_fingerprint
from tests.e2e.conftest import Stack, new_person, run_id
from tests.support.amqp import connect, drain, tap

pytestmark = pytest.mark.e2e


def _published_ids(stack: Stack, action) -> list[str]:  # type: ignore[no-untyped-def]
    async def scenario() -> list[str]:
        connection = await connect(stack.infra.amqp_url)
        async with connection:
            observed = await tap(connection, "contact.upserted.v1")
            await asyncio.to_thread(action)
            return [
                e["message_id"]
                for m in await drain(observed, settle=1.0)
                for e in json.loads(m.body)["events"]
            ]

    return asyncio.run(scenario())


def test_a_retry_with_the_same_key_gets_the_first_answer_and_publishes_nothing(
    stack: Stack,
) -> None:
    run = run_id()
    body = {"items": [new_person(run, 0), new_person(run, 1)]}
    answers: list[httpx.Response] = []

    def post_three_times() -> None:
        with stack.client(headers={"Idempotency-Key": f"sync-{run}"}) as client:
            answers.extend(client.post("/v1/contacts", json=body) for _ in range(3))

    published = _published_ids(stack, post_three_times)
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert answers[0].json() == answers[1].json() == answers[2].json()
    assert "idempotent-replayed" not in answers[0].headers
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert sorted(published) == sorted(answers[0].json()["event_ids"])  # published once


def test_the_same_key_with_another_body_is_a_conflict(stack: Stack) -> None:
    run = run_id()
    with stack.client(headers={"Idempotency-Key": f"conflict-{run}"}) as client:
        assert client.post("/v1/contacts", json=new_person(run, 0)).status_code == 202
        response = client.post("/v1/contacts", json=new_person(run, 1))
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert "different request" in response.json()["detail"]


def test_keys_belong_to_an_integration_and_bad_keys_are_refused(stack: Stack) -> None:
    run = run_id()
    with stack.client(headers={"Idempotency-Key": "has a space"}) as client:
        assert client.post("/v1/contacts", json=new_person(run, 0)).status_code == 400


def test_concurrent_retries_publish_once(stack: Stack) -> None:
    run = run_id()
    body = {"items": [new_person(run, i) for i in range(20)]}

    def post_concurrently() -> list[int]:
        def post() -> int:
            with stack.client(headers={"Idempotency-Key": f"race-{run}"}) as client:
                return client.post("/v1/contacts", json=body).status_code

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda _: post(), range(8)))

    statuses: list[int] = []
    published = _published_ids(stack, lambda: statuses.extend(post_concurrently()))
    assert set(statuses) <= {202, 409} and 202 in statuses
    assert len(published) == 20  # one request's events, once


def test_a_retry_of_a_request_first_seen_before_keyed_fingerprints_gets_its_answer(
    stack: Stack,
) -> None:
    # A row an older ingest kept holds the plain SHA-256 of the request: the retry is still
    # the same request (its first answer, not a 409).
    run = run_id()
    key = f"legacy-{run}"
    body = json.dumps(new_person(run, 0)).encode()
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    with stack.client(headers=headers) as client:
        first = client.post("/v1/contacts", content=body)
        assert first.status_code == 202, first.text

        async def as_an_older_ingest_kept_it() -> None:
            conn = await asyncpg.connect(stack.infra.database_url)
            try:
                updated = await conn.execute(
                    "UPDATE ingest.idempotency_keys SET fingerprint = $2 WHERE key = $1",
                    key,
                    legacy_fingerprint("POST", "/v1/contacts", body),
                )
                assert updated == "UPDATE 1"
            finally:
                await conn.close()

        asyncio.run(as_an_older_ingest_kept_it())
        replayed = client.post("/v1/contacts", content=body)
        other = client.post("/v1/contacts", json=new_person(run, 1))
    assert replayed.status_code == 202, replayed.text
    assert replayed.json() == first.json()
    assert replayed.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
