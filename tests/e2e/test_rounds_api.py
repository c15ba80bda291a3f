"""Pools, rounds and feedback over HTTP, against the three live services: a round's proposals
travel through RabbitMQ to the notifier and out by email like any other."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.e2e.conftest import Stack, new_person, run_id
from tests.support.infra import API_KEY

pytestmark = pytest.mark.e2e


def _matcher(stack: Stack) -> httpx.Client:
    return httpx.Client(
        base_url=stack.matcher_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    )


def _finished_round(client: httpx.Client, location: str, within: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(location).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"the round at {location} did not finish within {within} s")


def _load_people(stack: Stack, run: str, count: int) -> list[dict[str, Any]]:
    """People tagged for this run, paired by a topic only two share, plus one everyone shares.
    Weights are low, so the live path (min score 1.0) proposes nothing: the round does."""
    people = [new_person(run, i, tags=[f"t{run}"]) for i in range(count)]
    with stack.client() as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        interests = [
            {"source": "e2e", "external_id": f"{run}-{i}", "topic": topic, "weight": 0.2}
            for i in range(count)
            for topic in (f"pair {i // 2} {run}", f"common {run}")
        ]
        assert client.post("/v1/interests", json={"items": interests}).status_code == 202
    return people


def _wait_until_loaded(matcher: httpx.Client, pool: str, count: int) -> None:
    """The matcher applies events asynchronously: a dry run tells when all have arrived."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = matcher.post("/v1/rounds", json={"pool": pool, "dry_run": True})
        plan = _finished_round(matcher, response.headers["Location"])
        if plan["stats"]["eligible"] == count and plan["stats"]["placed"] == count:
            return
        time.sleep(0.3)
    raise AssertionError("the matcher did not receive every person in time")


def test_the_pools_api_needs_a_key_and_valid_input(stack: Stack) -> None:
    assert httpx.get(f"{stack.matcher_url}/v1/pools").status_code == 401
    with _matcher(stack) as matcher:
        bad = matcher.post(
            "/v1/pools",
            json={"name": "Not A Name", "group_size": 9, "rules": {"same_team": "required"}},
        )
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        fields = {e["field"] for e in bad.json()["errors"]}
        assert {"name", "group_size", "rules.same_team"} <= fields
        missing = matcher.post("/v1/rounds", json={"pool": "no-such-pool"})
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert matcher.get("/v1/rounds/00000000-0000-0000-0000-000000000000").status_code == 404


def test_a_pool_on_a_schedule_over_http(stack: Stack) -> None:
    """A weekly schedule's next round is its first slot, on the local clock; an interval's
    first round is requested at once by the matcher's own polling loop; bad schedules get a
    422 naming the field."""
    run = run_id()
    berlin = ZoneInfo("Europe/Berlin")
    schedule = {"weekdays": ["mon"], "at": "09:00", "timezone": "Europe/Berlin"}
    with _matcher(stack) as matcher:
        saved_at = datetime.now(UTC)
        created = matcher.post("/v1/pools", json={"name": f"w{run}", "schedule": schedule})
        assert created.status_code == 201, created.text
        body = created.json()
        next_at = datetime.fromisoformat(body["next_round_at"])
        assert saved_at < next_at <= saved_at + timedelta(days=7)
        local = next_at.astimezone(berlin)
        assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)
        assert body["schedule"] == {**schedule, "every_weeks": 1, "starting": str(local.date())}
        assert body["every_seconds"] is None
        listed = {p["name"]: p for p in matcher.get("/v1/pools").json()["pools"]}
        assert listed[f"w{run}"]["next_round_at"] == body["next_round_at"]

        # An interval: the first round now, not a day from now.
        daily = matcher.post(
            "/v1/pools",
            json={"name": f"d{run}", "selector": {"tags": [f"none{run}"]}, "every_seconds": 86400},
        )
        assert daily.status_code == 201, daily.text
        deadline = time.monotonic() + 20
        while not matcher.get("/v1/rounds", params={"pool": f"d{run}"}).json()["rounds"]:
            assert time.monotonic() < deadline, "the interval's first round was not requested"
            time.sleep(0.2)
        moved = {p["name"]: p for p in matcher.get("/v1/pools").json()["pools"]}[f"d{run}"]
        assert datetime.fromisoformat(moved["next_round_at"]) > saved_at + timedelta(hours=23)

        bad = matcher.post(
            "/v1/pools",
            json={
                "name": f"b{run}",
                "schedule": {"weekdays": ["monday"], "at": "9am", "timezone": "Mars/Olympus"},
            },
        )
        assert bad.status_code == 422
        fields = {e["field"] for e in bad.json()["errors"]}
        assert fields == {"schedule.weekdays[0]", "schedule.at", "schedule.timezone"}
        both = matcher.post(
            "/v1/pools", json={"name": f"b{run}", "every_seconds": 3600, "schedule": schedule}
        )
        assert both.status_code == 422
        assert [e["field"] for e in both.json()["errors"]] == ["schedule"]


def test_a_round_over_http_introduces_everyone_in_the_pool_once(stack: Stack) -> None:
    run = run_id()
    pool = f"p{run}"
    with _matcher(stack) as matcher:
        created = matcher.post(
            "/v1/pools", json={"name": pool, "selector": {"tags": [f"t{run}"]}, "group_size": 2}
        )
        assert created.status_code == 201, created.text
        assert matcher.post("/v1/pools", json={"name": pool, "selector": {"tags": [f"t{run}"]}})
        assert pool in {p["name"] for p in matcher.get("/v1/pools").json()["pools"]}

        people = _load_people(stack, run, 8)
        _wait_until_loaded(matcher, pool, 8)

        requested = matcher.post("/v1/rounds", json={"pool": pool, "seed": 7})
        assert requested.status_code == 202, requested.text
        done = _finished_round(matcher, requested.headers["Location"])
        assert done["status"] == "done", done["error"]
        assert done["stats"]["coverage"] == 1.0
        assert done["stats"]["groups"] == 4
        intros = matcher.get(f"/v1/rounds/{done['id']}/intros").json()["intros"]
        pairs = sorted(sorted(p["external_id"] for p in i["participants"]) for i in intros)
        assert pairs == [[f"{run}-{i}", f"{run}-{i + 1}"] for i in range(0, 8, 2)]
        assert all(i["reason"].startswith("You both care about pair") for i in intros)

        # Delivered like any proposal: each person gets exactly one introduction email.
        for person in people:
            stack.sink.wait_for(person["email"], within=15)
        time.sleep(1.0)
        assert all(len(stack.sink.to(p["email"])) == 1 for p in people)
        with httpx.Client(
            base_url=stack.notifier_url, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as notifier:
            listed = notifier.get("/v1/intros", params={"round": done["id"]}).json()["intros"]
        assert len(listed) == 4
        assert {i["round"] for i in listed} == {done["id"]}

        # A second round finds nobody new to meet inside the pairs: no group repeats.
        again = matcher.post("/v1/rounds", json={"pool": pool, "seed": 8})
        second = _finished_round(matcher, again.headers["Location"])
        later = matcher.get(f"/v1/rounds/{second['id']}/intros").json()["intros"]
        later_pairs = {tuple(sorted(p["external_id"] for p in i["participants"])) for i in later}
        assert not later_pairs & {tuple(p) for p in pairs}

        # Feedback: recorded, summarised on the round, and 404 for an unknown introduction.
        first = intros[0]["id"]
        met = matcher.post(f"/v1/intros/{first}/feedback", json={"outcome": "met", "rating": 5})
        assert met.status_code == 201, met.text
        assert met.json()["outcomes"] == {"met": 1}
        assert matcher.get(f"/v1/rounds/{done['id']}").json()["feedback"] == {"met": 1}
        unknown = matcher.post(
            "/v1/intros/00000000-0000-0000-0000-000000000000/feedback", json={"outcome": "met"}
        )
        assert unknown.status_code == 404
        invalid = matcher.post(f"/v1/intros/{first}/feedback", json={"outcome": "great"})
        assert invalid.status_code == 422


def test_a_resource_reaches_the_interested_by_email_once(stack: Stack) -> None:
    run = run_id()
    people = [new_person(run, i) for i in range(4)]
    topic = f"bryophytes {run}"
    with stack.client() as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        interests = [
            {"source": "e2e", "external_id": f"{run}-{i}", "topic": topic, "kind": kind}
            for i, kind in ((0, "likes"), (1, "seeks"), (2, "offers"))
        ]
        assert client.post("/v1/interests", json={"items": interests}).status_code == 202
    body = {
        "url": f"https://example.org/mosses/{run}",
        "title": "Mosses <of> the world",
        "topics": [topic.upper()],
    }
    with _matcher(stack) as matcher:
        deadline = time.monotonic() + 15
        while True:  # until the matcher has applied the interests
            shared = matcher.post("/v1/resources", json=body)
            assert shared.status_code == 202, shared.text
            if shared.json()["total_recipients"] == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert shared.json()["total_recipients"] == 2
        again = matcher.post("/v1/resources", json=body)
        assert again.json()["recipients"] == 0
    url = f"https://example.org/mosses/{run}"

    def resource_mails(person: dict[str, Any]) -> list[str]:
        # The seeker and the offerer also get their introduction: count the resource's only.
        return [m.text for m in stack.sink.to(person["email"]) if url in m.text]

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(resource_mails(p) for p in people[:2]):
        time.sleep(0.2)
    time.sleep(1.0)
    assert [len(resource_mails(p)) for p in people] == [1, 1, 0, 0]
    assert "Mosses <of> the world" in resource_mails(people[0])[0]


def test_a_pool_on_a_cron_schedule_over_http(stack: Stack) -> None:
    """A cron expression is read on the pool's local clock: its next round is shown in the
    pools list; a bad expression gets a 422 naming the field and what is wrong."""
    run = run_id()
    berlin = ZoneInfo("Europe/Berlin")
    schedule = {"cron": "0 9 * * mon", "timezone": "Europe/Berlin"}
    with _matcher(stack) as matcher:
        saved_at = datetime.now(UTC)
        created = matcher.post("/v1/pools", json={"name": f"c{run}", "schedule": schedule})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["schedule"]["cron"] == "0 9 * * mon" and "weekdays" not in body["schedule"]
        next_at = datetime.fromisoformat(body["next_round_at"])
        assert saved_at < next_at <= saved_at + timedelta(days=7)
        local = next_at.astimezone(berlin)
        assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)
        listed = {p["name"]: p for p in matcher.get("/v1/pools").json()["pools"]}
        assert listed[f"c{run}"]["next_round_at"] == body["next_round_at"]

        bad = matcher.post(
            "/v1/pools",
            json={"name": f"b{run}", "schedule": {"cron": "0 9 * * funday", "timezone": "UTC"}},
        )
        assert bad.status_code == 422
        [error] = bad.json()["errors"]
        assert error["field"] == "schedule.cron" and "day of week 'funday'" in error["message"]
