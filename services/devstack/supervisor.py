"""`roac up`: run the services as child processes in one terminal, restart any that dies, and stop
them all cleanly (SIGTERM, then SIGKILL after a grace period) on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field

COLOURS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m")
RESET = "\033[0m"
GRACE_SECONDS = 20.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    output: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._children: list[Child] = []
        self._stopping = asyncio.Event()
        self._colour = sys.stdout.isatty()
        self._pending: set[asyncio.Future[None]] = set()

    def say(self, name: str, line: str) -> None:
        width = max((len(c.name) for c in self._children), default=len(name))
        label = name.ljust(width)
        if self._colour:
            index = (
                [c.name for c in self._children].index(name)
                if name in [c.name for c in self._children]
                else 0
            )
            label = f"{COLOURS[index % len(COLOURS)]}{label}{RESET}"
        print(f"{label} | {line}", flush=True)

    async def start(self, name: str, *args: str) -> Child:
        child = Child(name, [sys.executable, "-m", "services.cli", *args])
        self._children.append(child)
        await self._spawn(child)
        return child

    async def _spawn(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            env=self._env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Own session: Ctrl-C reaches only the supervisor, which stops children in order.
            start_new_session=True,
        )
        child.output = asyncio.create_task(self._pump(child, child.process))

    async def _pump(self, child: Child, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            self.say(child.name, raw.decode(errors="replace").rstrip())

    async def watch(self) -> None:
        """Restart children that exit while the stack is running, with a growing pause."""
        while not self._stopping.is_set():
            for child in self._children:
                process = child.process
                if process is None or process.returncode is None:
                    continue
                if self._stopping.is_set():
                    return
                child.restarts += 1
                delay = min(2 ** min(child.restarts, 5), 30)
                self.say(child.name, f"exited with {process.returncode}; restarting in {delay}s")
                child.process = None
                asyncio.get_running_loop().call_later(delay, self._schedule_respawn, child)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.5)

    def _schedule_respawn(self, child: Child) -> None:
        self._pending.add(asyncio.ensure_future(self._respawn(child)))

    async def _respawn(self, child: Child) -> None:
        if not self._stopping.is_set():
            await self._spawn(child)

    def request_stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)

    async def run_until_stopped(self) -> None:
        await self.watch()

    async def stop_all(self) -> None:
        """SIGTERM each child and wait for it: ingest first (it stops taking requests), then the
        consumers (they finish their in-flight messages), the mail catcher last."""
        self._stopping.set()
        for child in self._stop_order():
            process = child.process
            if process is None or process.returncode is not None:
                continue
            self.say(child.name, "stopping")
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), GRACE_SECONDS)
            except TimeoutError:
                self.say(child.name, f"still running after {GRACE_SECONDS:.0f}s; killing")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            if child.output is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(child.output, 2)

    def _stop_order(self) -> list[Child]:
        first = [c for c in self._children if c.name == "ingest"]
        last = [c for c in self._children if c.name == "mailcatcher"]
        middle = [c for c in self._children if c not in first and c not in last]
        return first + middle + last
