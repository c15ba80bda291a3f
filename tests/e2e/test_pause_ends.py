"""A two-week pause end to end, on a clock the test moves: a person pauses on their preferences
page; rounds leave them out ("paused until ...") and live matching skips them; then the
running matcher's and notifier's clock is moved 15 days on (`ROAC_CLOCK_OFFSET_FILE`, read by
both; shared/clock.py) and, with nothing else changed, they are back: live matching introduces
them, a round plans them, and their page no longer says they are paused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, new_person, run_id, running_stack
from tests.e2e.test_preferences import _introduce, _preferences_link
from tests.support.infra import API_KEY
from tests.support.rounds import dry_run, left_out
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def clock_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clock") / "offset"
    path.write_text("0")
    return path


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, clock_file: Path
) -> Iterator[Stack]:
    with running_stack(
        "pause-ends",
        tmp_path_factory.mktemp("pause-ends-logs"),
        request,
        ROAC_INTRO_MODE="direct",
        ROAC_MATCH_MIN_SCORE="0.1",
        ROAC_QUIET_HOURS_ENABLED="false",
        ROAC_CLOCK_OFFSET_FILE=str(clock_file),
    ) as created:
        yield created


def _matcher(stack: Stack) -> httpx.Client:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.Client(base_url=stack.matcher_url, headers=headers, timeout=15)


def test_a_two_week_pause_holds_in_rounds_and_live_matching_then_ends_by_itself(
    stack: Stack, clock_file: Path
) -> None:
    run = run_id()
    tag = f"t{run}"
    paused, first_partner = new_person(run, 0, tags=[tag]), new_person(run, 1)
    _introduce(stack, [paused, first_partner], f"paper kites {run}")
    mail = stack.sink.wait_for(paused["email"], within=20)[0]
    link = _preferences_link(mail.text)
    assert httpx.post(link, data={"pause": "2"}).status_code == 303
    with _matcher(stack) as matcher:
        pool = matcher.post("/v1/pools", json={"name": f"p{run}", "selector": {"tags": [tag]}})
        assert pool.status_code == 201, pool.text

    def held() -> dict[str, Any]:
        with _matcher(stack) as matcher:
            found: dict[str, Any] = matcher.get(f"/v1/contacts/e2e/{paused['external_id']}").json()
        return found

    eventually(lambda: held()["snoozed_until"])
    until = datetime.fromisoformat(held()["snoozed_until"])
    assert abs(until - (datetime.now(UTC) + timedelta(weeks=2))) < timedelta(hours=1)

    # While paused: a round leaves them out with the reason, and live matching skips them.
    roundmate = new_person(run, 2, tags=[tag])
    # They share a topic (the integration re-sends the paused person: their pause holds).
    _introduce(stack, [roundmate, paused], f"round kites {run}")
    plan = dry_run(stack.matcher_url, f"p{run}")
    assert left_out(plan, paused["external_id"]) == f"paused until {until.date().isoformat()}"
    newcomer = new_person(run, 3)
    _introduce(stack, [newcomer, paused], f"tin whistles {run}")
    time.sleep(3)
    assert stack.sink.to(newcomer["email"]) == [] and stack.sink.to(roundmate["email"]) == []
    assert len(stack.sink.to(paused["email"])) == 1
    assert "paused until" in httpx.get(link).text.lower()

    # Fifteen days later (on the services' clock), nothing else changed: they are back.
    clock_file.write_text(str(15 * 86400))
    back = dry_run(stack.matcher_url, f"p{run}")
    assert left_out(back, paused["external_id"]) is None
    assert back["stats"]["placed"] == 2  # with the roundmate
    assert "paused until" not in httpx.get(link).text.lower()
    latecomer = new_person(run, 4)
    _introduce(stack, [latecomer, paused], f"sea glass {run}")
    stack.sink.wait_for(latecomer["email"], within=20)
    assert len(stack.sink.to(paused["email"])) == 2
