"""End to end: HTTP in, RabbitMQ and PostgreSQL in between, SMTP out, three separate processes."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import aio_pika
import httpx
import pytest

from shared.topology import MATCHER_QUEUE
from tests.e2e.conftest import Stack, new_person, run_id
from tests.support.amqp import connect, first_death, wait_for_message

pytestmark = pytest.mark.e2e

SETTLE_SECONDS = 2.0  # after the expected mail arrived, how long we watch for a duplicate


def _post(client: httpx.Client, path: str, body: object) -> httpx.Response:
    response = client.post(path, json=body)
    assert response.status_code == 202, response.text
    return response


def test_two_people_sharing_a_rare_topic_each_get_one_email_naming_the_other(stack: Stack) -> None:
    run = run_id()
    people = [new_person(run, i) for i in range(7)]
    rare = f"kite aerial photography {run}"
    with stack.client() as client:
        _post(client, "/v1/contacts", {"items": people})
        # Five unrelated people, each with an interest nobody else has.
        for i in range(2, 7):
            _post(
                client,
                "/v1/interests",
                {
                    "source": "e2e",
                    "external_id": f"{run}-{i}",
                    "topic": f"hobby {i} {run}",
                    "kind": "likes",
                },
            )
        _post(
            client,
            "/v1/interests",
            {"source": "e2e", "external_id": f"{run}-0", "topic": rare, "kind": "likes"},
        )
        _post(
            client,
            "/v1/interests",
            {
                "source": "e2e",
                "external_id": f"{run}-1",
                "topic": rare.upper(),
                "kind": "likes",
                "weight": 1.0,
            },
        )
        accepted_at = time.monotonic()

    first = stack.sink.wait_for(people[0]["email"], within=10)
    second = stack.sink.wait_for(people[1]["email"], within=10)
    elapsed = time.monotonic() - accepted_at
    assert first and second, "no introduction arrived within 10 seconds"
    assert elapsed < 10
    time.sleep(SETTLE_SECONDS)

    to_first, to_second = stack.sink.to(people[0]["email"]), stack.sink.to(people[1]["email"])
    assert len(to_first) == 1 and len(to_second) == 1
    assert people[1]["name"] in to_first[0].text and rare in to_first[0].text
    assert people[0]["name"] in to_second[0].text and rare in to_second[0].text
    assert people[1]["email"] in to_first[0].text  # how to reach them
    assert rare in to_first[0].subject
    for person in people[2:]:
        assert stack.sink.to(person["email"]) == []


def test_matcher_killed_mid_burst_still_introduces_every_pair_exactly_once(stack: Stack) -> None:
    """A burst of single-event requests; the matcher is SIGKILLed while it works through them
    and restarted: every pair gets its introduction, nobody gets one twice."""
    run = run_id()
    pairs = 60
    people = [new_person(run, i) for i in range(pairs * 2)]
    with stack.client() as client:
        _post(client, "/v1/contacts", {"items": people})

    def declare(i: int) -> None:
        with stack.client() as client:
            _post(
                client,
                "/v1/interests",
                {
                    "source": "e2e",
                    "external_id": f"{run}-{i}",
                    "topic": f"rare pair topic {i // 2} {run}",
                },
            )

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(declare, i) for i in range(pairs * 2)]
        for n, future in enumerate(futures):
            future.result()
            if n == pairs:  # half of the interests are accepted: kill mid-stream
                stack.matcher.kill()
    stack.matcher.start()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(stack.sink.to(p["email"]) for p in people):
            break
        time.sleep(0.2)
    time.sleep(SETTLE_SECONDS)
    counts = {p["email"]: len(stack.sink.to(p["email"])) for p in people}
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    for i in range(0, pairs * 2, 2):
        [mail] = stack.sink.to(people[i]["email"])
        assert people[i + 1]["name"] in mail.text


def test_matcher_killed_after_the_interest_is_accepted_still_introduces_once(stack: Stack) -> None:
    run = run_id()
    people = [new_person(run, i) for i in range(2)]
    topic = f"bookbinding {run}"
    with stack.client() as client:
        _post(client, "/v1/contacts", {"items": people})
        _post(client, "/v1/interests", {"source": "e2e", "external_id": f"{run}-0", "topic": topic})
        stack.matcher.kill()
        _post(client, "/v1/interests", {"source": "e2e", "external_id": f"{run}-1", "topic": topic})
    stack.matcher.start()
    assert stack.sink.wait_for(people[0]["email"], within=10)
    assert stack.sink.wait_for(people[1]["email"], within=10)
    time.sleep(SETTLE_SECONDS)
    assert len(stack.sink.to(people[0]["email"])) == 1
    assert len(stack.sink.to(people[1]["email"])) == 1


def test_a_malformed_message_is_parked_and_the_matcher_keeps_working(stack: Stack) -> None:
    run = run_id()

    async def publish_poison() -> list[aio_pika.abc.AbstractIncomingMessage]:
        connection = await connect(stack.infra.amqp_url)
        async with connection:
            channel = await connection.channel()
            for body in (b"this is not json", b'{"events": [{"type": "interest.declared.v1"}]}'):
                await channel.default_exchange.publish(
                    aio_pika.Message(body, message_id=f"poison-{run}-{len(body)}"),
                    routing_key=MATCHER_QUEUE.name,
                )
            parked_queue = await channel.declare_queue(
                MATCHER_QUEUE.dead_letter_queue, passive=True
            )
            parked: list[aio_pika.abc.AbstractIncomingMessage] = []
            deadline = time.monotonic() + 10
            while len(parked) < 2 and time.monotonic() < deadline:
                message = await wait_for_message(parked_queue, within=1)
                if message is not None and (message.message_id or "").startswith(f"poison-{run}"):
                    parked.append(message)
            return parked

    parked = asyncio.run(publish_poison())
    assert len(parked) == 2
    for message in parked:
        death = first_death(message)
        assert death["reason"] == "rejected"
        assert death["queue"] == MATCHER_QUEUE.name

    # ...and the matcher still introduces people.
    people = [new_person(run, i) for i in range(2)]
    with stack.client() as client:
        _post(client, "/v1/contacts", {"items": people})
        for i in range(2):
            _post(
                client,
                "/v1/interests",
                {"source": "e2e", "external_id": f"{run}-{i}", "topic": f"after the poison {run}"},
            )
    assert stack.sink.wait_for(people[0]["email"], within=10)
    assert stack.sink.wait_for(people[1]["email"], within=10)


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_matcher_metrics_move(stack: Stack) -> None:
    run = run_id()
    labels = {"service": "matcher", "type": "interest.declared.v1", "outcome": "processed"}
    before = _metric(stack.matcher_url, "roac_events_consumed_total", **labels)
    with stack.client() as client:
        _post(client, "/v1/contacts", new_person(run, 0))
        _post(
            client,
            "/v1/interests",
            {"source": "e2e", "external_id": f"{run}-0", "topic": "metrics"},
        )
    deadline = time.monotonic() + 10
    while _metric(stack.matcher_url, "roac_events_consumed_total", **labels) <= before:
        assert time.monotonic() < deadline, "the matcher's counter did not move"
        time.sleep(0.1)
    text = httpx.get(f"{stack.matcher_url}/metrics").text
    assert "roac_message_handling_seconds_bucket" in text
    assert "@example.org" not in text  # no person in any label
    for url in (stack.ingest_url, stack.notifier_url):
        assert httpx.get(f"{url}/metrics").status_code == 200


def test_every_service_reports_ready(stack: Stack) -> None:
    for url in (stack.ingest_url, stack.matcher_url, stack.notifier_url):
        response = httpx.get(f"{url}/readyz")
        assert response.status_code == 200, response.text
        assert all(response.json()["checks"].values())
