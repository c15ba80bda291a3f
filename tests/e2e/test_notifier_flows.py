"""Double opt-in, seek/offer order and webhook delivery with retries, parking and replay, end to
end: real RabbitMQ (delay queues, dead-letter queue), PostgreSQL, SMTP sink and HTTP providers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aio_pika
import httpx
import pytest

from shared.topology import DELIVERY_QUEUE
from tests.e2e.conftest import Stack, new_person, run_id, running_stack
from tests.support.amqp import connect, drain, tap, wait_for_message
from tests.support.fake_providers import ProviderServer, fake_providers
from tests.support.infra import API_KEY, WEBHOOK_SIGNING_KEY, free_port

pytestmark = pytest.mark.e2e

ASK_TTL_SECONDS = 8


@pytest.fixture(scope="module")
def providers() -> Iterator[ProviderServer]:
    with fake_providers(WEBHOOK_SIGNING_KEY.encode()) as server:
        yield server


@pytest.fixture(scope="module")
def optin(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    with running_stack(
        "optin",
        tmp_path_factory.mktemp("optin-logs"),
        request,
        ROAC_INTRO_MODE="double_opt_in",
        ROAC_MATCH_MIN_SCORE="0.1",  # any shared topic will do: these tests are about delivery
        ROAC_ASK_TTL_SECONDS=ASK_TTL_SECONDS,
        ROAC_EXPIRY_SWEEP_SECONDS="0.5",
        ROAC_QUIET_HOURS_ENABLED="false",
        ROAC_RETRY_BASE_SECONDS="1",
        ROAC_DELIVERY_MAX_ATTEMPTS=3,
        # 169.254.169.254 on the list too, so the connect-time guard is what refuses it.
        ROAC_WEBHOOK_ALLOWED_HOSTS="127.0.0.1,169.254.169.254",
    ) as stack:
        yield stack


def _introduce(
    stack: Stack,
    people: list[dict[str, Any]],
    topic: str,
    kinds: tuple[str, str] = ("likes", "likes"),
) -> None:
    with stack.client() as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        for person, kind in zip(people, kinds, strict=True):
            body = {
                "source": "e2e",
                "external_id": person["external_id"],
                "topic": topic,
                "kind": kind,
            }
            assert client.post("/v1/interests", json=body).status_code == 202


def _link(text: str, label: str) -> str:
    found = re.search(rf"{label}:\s+(\S+)", text)
    assert found, text
    return found[1]


def _intro_state(stack: Stack, external_id: str) -> str | None:
    response = httpx.get(
        f"{stack.notifier_url}/v1/intros",
        headers={"Authorization": f"Bearer {API_KEY}"},
        params={"limit": 200},
    )
    assert response.status_code == 200, response.text
    for intro in response.json()["intros"]:
        if any(p["external_id"] == external_id for p in intro["participants"]):
            return str(intro["state"])
    return None


def _wait_state(stack: Stack, external_id: str, state: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while (current := _intro_state(stack, external_id)) != state:
        assert time.monotonic() < deadline, f"state {current!r}, expected {state!r}"
        time.sleep(0.2)


def test_both_accept_through_the_links_and_each_gets_one_introduction(optin: Stack) -> None:
    run = run_id()
    people = [new_person(run, i) for i in range(2)]
    _introduce(optin, people, f"origami {run}")
    asks = [optin.sink.wait_for(p["email"], within=10) for p in people]
    assert all(len(a) == 1 for a in asks)
    assert people[1]["name"] not in asks[0][0].text  # an ask names nobody
    accept = _link(asks[0][0].text, "Yes, introduce me")
    page = httpx.get(accept)
    assert page.status_code == 200 and '<form method="post"' in page.text  # a GET only asks
    assert "Thank you" in httpx.post(accept).text
    assert "Already noted" in httpx.post(accept).text  # clicked twice
    time.sleep(1)
    assert len(optin.sink.to(people[0]["email"])) == 1  # still just the ask
    httpx.post(_link(asks[1][0].text, "Yes, introduce me"))
    intros = [optin.sink.wait_for(p["email"], count=2, within=10) for p in people]
    time.sleep(1.5)
    for i, mails in enumerate(intros):
        mails = optin.sink.to(people[i]["email"])
        assert len(mails) == 2
        assert people[1 - i]["name"] in mails[0].text and people[1 - i]["email"] in mails[0].text
    _wait_state(optin, people[0]["external_id"], "introduced")


def test_one_decline_means_nothing_more_to_anyone(optin: Stack) -> None:
    run = run_id()
    people = [new_person(run, i) for i in range(2)]
    _introduce(optin, people, f"beekeeping {run}")
    asks = [optin.sink.wait_for(p["email"], within=10)[0] for p in people]
    httpx.post(_link(asks[0].text, "Yes, introduce me"))
    assert "Nobody is told" in httpx.post(_link(asks[1].text, "No, thanks")).text
    assert "ended" in httpx.post(_link(asks[1].text, "Yes, introduce me")).text
    time.sleep(2)
    assert [len(optin.sink.to(p["email"])) for p in people] == [1, 1]
    assert _intro_state(optin, people[0]["external_id"]) == "declined"


def test_an_unanswered_introduction_expires(optin: Stack) -> None:
    run = run_id()
    people = [new_person(run, i) for i in range(2)]
    _introduce(optin, people, f"lichens {run}")
    [ask] = optin.sink.wait_for(people[0]["email"], within=10)
    _wait_state(optin, people[0]["external_id"], "expired", within=ASK_TTL_SECONDS + 10)
    response = httpx.post(_link(ask.text, "Yes, introduce me"))
    assert response.status_code == 410
    time.sleep(1)
    assert [len(optin.sink.to(p["email"])) for p in people] == [1, 1]


def test_the_seeker_is_asked_first_and_the_helper_after_the_yes(optin: Stack) -> None:
    run = run_id()
    seeker, helper = new_person(run, 0), new_person(run, 1)
    _introduce(optin, [seeker, helper], f"grant writing {run}", kinds=("seeks", "offers"))
    [ask] = optin.sink.wait_for(seeker["email"], within=10)
    assert "can help with grant writing" in ask.text
    time.sleep(1.5)
    assert optin.sink.to(helper["email"]) == []
    httpx.post(_link(ask.text, "Yes, introduce me"))
    [helper_ask] = optin.sink.wait_for(helper["email"], within=10)
    assert "looking for help with grant writing" in helper_ask.text
    httpx.post(_link(helper_ask.text, "Yes, introduce me"))
    assert len(optin.sink.wait_for(seeker["email"], count=2, within=10)) == 2
    assert len(optin.sink.wait_for(helper["email"], count=2, within=10)) == 2


def _webhook_person(run: str, index: int, url: str) -> dict[str, Any]:
    person = new_person(run, index)
    del person["email"]
    person["channels"] = [{"type": "webhook", "address": url}]
    return person


def test_a_webhook_answering_503_twice_gets_the_message_once_more_with_backoff(
    optin: Stack, providers: ProviderServer
) -> None:
    run = run_id()
    path = f"/hook/{run}"
    providers.state.script(path, 503, 503)
    people = [_webhook_person(run, 0, providers.url + path), new_person(run, 1)]
    _introduce(optin, people, f"tidepools {run}")
    deadline = time.monotonic() + 20
    while len(providers.state.at(path)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)
    calls = providers.state.at(path)
    assert [c.body is None for c in calls] == [True, True, False]  # two failures, one delivery
    first_gap, second_gap = calls[1].at - calls[0].at, calls[2].at - calls[1].at
    assert 0.7 < first_gap < 2.5 and second_gap > first_gap  # ~1 s, then ~3 s (+-20 %)
    assert calls[2].body["type"] == "roac.ask" and calls[2].body["links"]["accept"]


def test_a_webhook_answering_400_is_not_retried_and_the_failure_is_announced(
    optin: Stack, providers: ProviderServer
) -> None:
    run = run_id()
    path = f"/hook/{run}"
    providers.state.script(path, 400)

    async def scenario() -> list[dict[str, Any]]:
        connection = await connect(optin.infra.amqp_url)
        async with connection:
            failures = await tap(connection, "delivery.failed.v1")
            await asyncio.to_thread(
                _introduce,
                optin,
                [_webhook_person(run, 0, providers.url + path), new_person(run, 1)],
                f"moss {run}",
            )
            await asyncio.sleep(4)
            return [e for m in await drain(failures) for e in json.loads(m.body)["events"]]

    events = [
        e for e in asyncio.run(scenario()) if e["data"]["recipient"]["external_id"] == f"{run}-0"
    ]
    assert len(events) == 1 and events[0]["data"]["permanent"] is True
    assert "400" in events[0]["data"]["reason"]
    assert len(providers.state.at(path)) == 1


def test_a_webhook_at_the_metadata_address_is_refused_for_good_without_retry(
    optin: Stack,
) -> None:
    """The stack opts in to 127.0.0.0/8 for the fake providers, nothing else: the live notifier
    refuses the cloud metadata address (link-local) as a permanent failure, never retried."""
    run = run_id()
    url = f"http://169.254.169.254/latest/meta-data/{run}"

    async def scenario() -> list[dict[str, Any]]:
        connection = await connect(optin.infra.amqp_url)
        async with connection:
            failures = await tap(connection, "delivery.failed.v1")
            await asyncio.to_thread(
                _introduce, optin, [_webhook_person(run, 0, url), new_person(run, 1)], f"fern {run}"
            )
            await asyncio.sleep(4)
            return [e for m in await drain(failures) for e in json.loads(m.body)["events"]]

    events = [
        e for e in asyncio.run(scenario()) if e["data"]["recipient"]["external_id"] == f"{run}-0"
    ]
    assert len(events) == 1 and events[0]["data"]["permanent"] is True
    assert "destination refused" in events[0]["data"]["reason"]
    assert "link-local" in events[0]["data"]["reason"]


def test_a_webhook_down_throughout_is_parked_then_replayed_once_back(optin: Stack) -> None:
    run = run_id()
    port = free_port()  # nothing listens here yet
    path = f"/hook/{run}"

    async def parked_job() -> aio_pika.abc.AbstractIncomingMessage | None:
        connection = await connect(optin.infra.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(DELIVERY_QUEUE.dead_letter_queue, passive=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                message = await wait_for_message(queue, within=1)
                if message is not None and b"delivery.requested.v1" in message.body:
                    # Put it back for `roac deliveries retry` to find.
                    await channel.default_exchange.publish(
                        aio_pika.Message(message.body, headers=message.headers),
                        routing_key=queue.name,
                    )
                    return message
            return None

    _introduce(
        optin,
        [_webhook_person(run, 0, f"http://127.0.0.1:{port}{path}"), new_person(run, 1)],
        f"fungi {run}",
    )
    parked = asyncio.run(parked_job())
    assert parked is not None
    assert "3 attempts" in str(parked.headers.get("x-roac-reason"))
    with fake_providers(WEBHOOK_SIGNING_KEY.encode(), port=port) as revived:
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", "deliveries", "retry"],
            env={**os.environ, **optin.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "replayed 1" in result.stdout, result.stdout
        deadline = time.monotonic() + 15
        while not revived.state.at(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        [delivered] = revived.state.at(path)
        assert delivered.body["type"] == "roac.ask"
