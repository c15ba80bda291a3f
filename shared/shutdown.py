"""Stopping a service within a bound, and saying where it waited when it could not.

A stop that hangs is indistinguishable from a crash to whoever waits for it (an orchestrator
kills the process after its grace period, 30 s under Kubernetes), and it leaves no trace of
why. So every step of a service's shutdown runs under a time limit of its own, is logged when
it starts, and, when it overruns, logs the stack of every task still running before the step
is cut short. Cutting a step short is safe by construction (an unacked message is redelivered,
an uncommitted transaction rolls back), but it is not clean: `ShutdownSteps.clean` tells, and
the process exits non-zero when it was not.

`stopping()` is set when a shutdown begins: a consumer pausing before it hands a message back
(shared/consumer.py) stops pausing, so in-flight handlers finish at once instead of sleeping
through the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable

log = logging.getLogger("roac.shutdown")

# One per event loop: an asyncio.Event belongs to the loop that first waits on it, and tests
# run many loops in one process.
_stopping: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = (
    weakref.WeakKeyDictionary()
)


def stopping() -> asyncio.Event:
    """The event set once the service running on this loop has begun to shut down."""
    loop = asyncio.get_running_loop()
    event = _stopping.get(loop)
    if event is None:
        event = _stopping[loop] = asyncio.Event()
    return event


async def pause(seconds: float) -> None:
    """Sleep `seconds`, or less if a shutdown begins meanwhile."""
    event = stopping()
    if event.is_set():
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


def running_tasks(limit_frames: int = 8) -> str:
    """Every task but the caller's, each with the chain of coroutines it is awaiting, outermost
    first: where the process waits. (`Task.get_stack` shows only the outermost one.)"""
    current = asyncio.current_task()
    lines = []
    for task in asyncio.all_tasks():
        if task is current or task.done():
            continue
        lines.append(f"  {task.get_name()}: {_awaiting(task.get_coro(), limit_frames)}")
    return "\n".join(sorted(lines)) or "  (no other task)"


def _awaiting(coroutine: object, limit: int) -> str:
    frames: list[str] = []
    while coroutine is not None and len(frames) < limit:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "gi_frame", None)
        if frame is None:
            break
        where = frame.f_code.co_filename.rsplit("/", 2)[-1]
        frames.append(f"{frame.f_code.co_name} ({where}:{frame.f_lineno})")
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "gi_yieldfrom", None)
    if coroutine is not None and not frames:
        return repr(coroutine)
    return " -> ".join(frames) or "?"


class ShutdownSteps:
    """Runs a service's shutdown one named, bounded step at a time."""

    def __init__(self, title: str, *, budget_seconds: float) -> None:
        self._title = title
        self._started = time.monotonic()
        self._deadline = self._started + budget_seconds
        self.clean = True
        stopping().set()

    async def step(self, name: str, work: Awaitable[object], *, within: float) -> None:
        """Await `work` for at most `within` seconds, and never past the whole budget (each
        step gets at least a moment, so the last ones still close what they can)."""
        within = max(0.5, min(within, self._deadline - time.monotonic()))
        log.info("%s stopping: %s", self._title, name)
        try:
            async with asyncio.timeout(within):
                await work
        except TimeoutError:
            self.clean = False
            log.error(
                "%s: %s did not finish within %.1f s; cutting it short. Still running:\n%s",
                self._title,
                name,
                within,
                running_tasks(),
            )
        except Exception:  # one failing step must not keep the others from running
            self.clean = False
            log.exception("%s: %s failed", self._title, name)

    def finish(self) -> None:
        seconds = time.monotonic() - self._started
        if self.clean:
            log.info("%s shut down gracefully in %.1f s", self._title, seconds)
        else:
            log.error("%s shut down in %.1f s, not cleanly (see above)", self._title, seconds)
