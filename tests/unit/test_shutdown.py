"""Bounded shutdown steps (shared/shutdown.py): a step that hangs is cut short and named, with
where every task waits; the rest still run; a consumer's pause ends when a shutdown begins."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from shared.shutdown import ShutdownSteps, pause, stopping


async def _hang_in_a_named_place(release: asyncio.Event) -> None:
    await release.wait()


def test_a_hanging_step_is_cut_short_and_says_where_everything_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> tuple[bool, list[str], float]:
        release = asyncio.Event()
        bystander = asyncio.create_task(_hang_in_a_named_place(release), name="bystander")
        done: list[str] = []

        async def quick() -> None:
            done.append("quick")

        steps = ShutdownSteps("roac test", budget_seconds=10)
        started = time.monotonic()
        await steps.step("stuck consumer", asyncio.sleep(60), within=0.5)
        await steps.step("pool", quick(), within=1)
        steps.finish()
        release.set()
        await bystander
        return steps.clean, done, time.monotonic() - started

    with caplog.at_level(logging.INFO, logger="roac.shutdown"):
        clean, done, seconds = asyncio.run(scenario())
    assert not clean
    assert done == ["quick"]  # later steps still ran
    assert seconds < 2
    overrun = next(r.getMessage() for r in caplog.records if "did not finish" in r.getMessage())
    assert "stuck consumer" in overrun
    # The task, and the chain of what it awaits down to the innermost coroutine.
    assert "bystander: _hang_in_a_named_place (test_shutdown.py" in overrun
    assert "-> wait (locks.py" in overrun
    assert any("not cleanly" in r.getMessage() for r in caplog.records)


def test_steps_never_run_past_the_whole_budget() -> None:
    async def scenario() -> float:
        steps = ShutdownSteps("roac test", budget_seconds=1)
        started = time.monotonic()
        await steps.step("first", asyncio.sleep(60), within=30)
        await steps.step("second", asyncio.sleep(60), within=30)
        return time.monotonic() - started

    # The first step uses the budget; the second still gets its half-second floor.
    assert asyncio.run(scenario()) < 2.5


def test_a_clean_shutdown_reports_itself_clean(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> bool:
        steps = ShutdownSteps("roac test", budget_seconds=5)
        await steps.step("nothing to wait for", asyncio.sleep(0), within=1)
        steps.finish()
        return steps.clean

    with caplog.at_level(logging.INFO, logger="roac.shutdown"):
        assert asyncio.run(scenario())
    assert any("shut down gracefully" in r.getMessage() for r in caplog.records)


def test_a_pause_ends_when_a_shutdown_begins() -> None:
    async def scenario() -> tuple[float, float]:
        started = time.monotonic()
        await pause(0.05)  # no shutdown: the full pause
        full = time.monotonic() - started
        waiting = asyncio.create_task(pause(30))
        await asyncio.sleep(0.05)
        ShutdownSteps("roac test", budget_seconds=1)  # begins the shutdown
        started = time.monotonic()
        await waiting
        cut = time.monotonic() - started
        await pause(30)  # once stopping, a pause does not wait at all
        return full, cut

    full, cut = asyncio.run(scenario())
    assert full >= 0.05
    assert cut < 0.5


def test_each_event_loop_has_its_own_stopping_event() -> None:
    async def is_set() -> bool:
        return stopping().is_set()

    async def begin() -> None:
        ShutdownSteps("roac test", budget_seconds=1)

    asyncio.run(begin())
    assert not asyncio.run(is_set())  # a new loop (a new test, a new process) starts afresh
