"""Bad HTTP input against the live ingest: a clear 4xx, and nothing reaches RabbitMQ."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, new_person, run_id
from tests.support.amqp import connect, drain, tap

pytestmark = pytest.mark.e2e


def _fields(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == response.status_code and body["title"] and body["detail"]
    return {e["field"]: e["message"] for e in body["errors"]}


def _bad_requests(stack: Stack) -> None:
    run = run_id()
    with stack.client() as client, httpx.Client(base_url=stack.ingest_url) as anonymous:
        response = anonymous.post("/v1/contacts", json=new_person(run, 0))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

        response = anonymous.post(
            "/v1/contacts", json=new_person(run, 0), headers={"Authorization": "Bearer wrong-key"}
        )
        assert response.status_code == 401

        person: dict[str, Any] = new_person(run, 0)
        del person["name"]
        response = client.post("/v1/contacts", json=person)
        assert response.status_code == 422
        assert _fields(response) == {"name": "is required"}

        response = client.post(
            "/v1/interests",
            json={"source": "e2e", "external_id": "x", "topic": "t", "kind": "loves"},
        )
        assert response.status_code == 422
        assert "likes" in _fields(response)["kind"]

        items = [
            {"source": "e2e", "external_id": f"{run}-{i}", "topic": "t", "kind": "likes"}
            for i in range(5)
        ]
        items[3]["kind"] = "hates"
        response = client.post("/v1/interests", json={"items": items})
        assert response.status_code == 422
        assert list(_fields(response)) == ["items[3].kind"]

        response = client.post(
            "/v1/interests",
            json={
                "items": [
                    {"source": "e2e", "external_id": f"{i}", "topic": "t"} for i in range(1001)
                ]
            },
        )
        assert response.status_code == 422
        assert "1000" in _fields(response)["items"]

        response = client.post(
            "/v1/contacts",
            content=b'{"source": "e2e", "external_id": ',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        assert "JSON" in response.json()["detail"]

        huge = json.dumps(
            {"items": [new_person(run, i) for i in range(1000)], "pad": "x" * 3_000_000}
        )
        response = client.post(
            "/v1/contacts", content=huge, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413

        response = client.post(
            "/v1/contacts", json={**new_person(run, 0), "email": "not an address"}
        )
        assert response.status_code == 422
        assert "email" in _fields(response)

        response = client.post(
            "/v1/contacts", json={**new_person(run, 0), "timezone": "Mars/Olympus"}
        )
        assert response.status_code == 422
        assert "timezone" in _fields(response)


def test_bad_input_gets_a_clear_4xx_and_publishes_nothing(stack: Stack) -> None:
    async def scenario() -> list[object]:
        connection = await connect(stack.infra.amqp_url)
        async with connection:
            observed = await tap(connection, "#")
            await asyncio.to_thread(_bad_requests, stack)
            published = await drain(observed, settle=1.0)
            return [
                m.routing_key
                for m in published
                if m.routing_key in ("contact.upserted.v1", "interest.declared.v1")
            ]

    assert asyncio.run(scenario()) == []


def test_a_good_request_is_confirmed_and_published(stack: Stack) -> None:
    run = run_id()

    async def scenario() -> tuple[httpx.Response, list[bytes]]:
        connection = await connect(stack.infra.amqp_url)
        async with connection:
            observed = await tap(connection, "contact.upserted.v1")
            with stack.client(headers={"X-Correlation-ID": f"corr-{run}"}) as client:
                response = await asyncio.to_thread(
                    client.post,
                    "/v1/contacts",
                    json={"items": [new_person(run, 0), new_person(run, 1)]},
                )
            messages = await drain(observed, settle=0.5)
            return response, [m.body for m in messages]

    response, bodies = asyncio.run(scenario())
    assert response.status_code == 202
    assert response.json()["accepted"] == 2
    assert response.headers["x-correlation-id"] == f"corr-{run}"
    events = [e for body in bodies for e in json.loads(body)["events"]]
    mine = [e for e in events if e["correlation_id"] == f"corr-{run}"]
    assert {e["message_id"] for e in mine} == set(response.json()["event_ids"])
    assert all(e["integration"] == "test" and e["source"] == "ingest" for e in mine)
