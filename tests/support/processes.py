"""The services as real, separate processes (`python -m services.cli <service>`), for e2e tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


class ServiceProcess:
    def __init__(
        self,
        name: str,
        env: dict[str, str],
        ready_url: str,
        log_dir: Path,
        label: str | None = None,
    ) -> None:
        self.name = name
        self._env = {**os.environ, **env}
        self.ready_url = ready_url
        # Several processes of one service (three matchers) each keep a log of their own.
        self.log_path = log_dir / f"{label or name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, within: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", self.name],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_ready(within)

    def wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self._process.returncode}:\n{self.tail()}"
                )
            try:
                if httpx.get(self.ready_url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready within {within}s:\n{self.tail()}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The running process's id (benchmarks read its memory from /proc)."""
        return self._process.pid if self._process is not None else None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown, in-flight work lost mid-way."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)

    def stop(self, within: float = 30.0) -> int | None:
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(within)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        return self._process.returncode

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def run_roac(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`roac ARGS` as an operator types it, with a stack's environment over this one's; the
    caller checks the exit code (some tests expect a refusal)."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
