"""What a newcomer does: `roac up` (as `make run` runs it) starts everything, the sample
community's first introductions land in the mail catcher, and Ctrl-C stops it all cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import asyncpg
import httpx
import pytest

from shared.scopes import ALL_SCOPES, Scope
from tests.support.infra import free_port, isolated_infra

pytestmark = pytest.mark.e2e


async def _active_keys(database_url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT name, scopes FROM access.api_keys WHERE revoked_at IS NULL ORDER BY name"
        )
    finally:
        await conn.close()
    return {row["name"]: sorted(row["scopes"]) for row in rows}


def test_roac_up_introduces_the_sample_community_and_stops_on_ctrl_c(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with isolated_infra("up") as infra:
        mail_http, mail_smtp, ingest, console = free_port(), free_port(), free_port(), free_port()
        env = {
            **os.environ,
            **infra.env(
                ROAC_INGEST_PORT=ingest,
                ROAC_MATCHER_PORT=free_port(),
                ROAC_NOTIFIER_METRICS_PORT=free_port(),
                ROAC_SMTP_PORT=mail_smtp,
                ROAC_MAILCATCHER_SMTP_PORT=mail_smtp,
                ROAC_MAILCATCHER_HTTP_PORT=mail_http,
                ROAC_CONSOLE_PORT=console,
            ),
        }
        del env["ROAC_API_KEYS"]  # as on a fresh machine: roac up makes a development key
        log = (tmp_path / "up.log").open("wb")
        up = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            messages: list[dict[str, object]] = []
            while time.monotonic() < deadline and not messages:
                time.sleep(0.5)
                try:
                    messages = httpx.get(f"http://127.0.0.1:{mail_http}/api/v1/messages").json()[
                        "messages"
                    ]
                except httpx.HTTPError:
                    continue
            output = (tmp_path / "up.log").read_text()
            assert messages, f"no introduction within a minute:\n{output}"
            assert all(str(m["To"][0]["Address"]).endswith("@example.org") for m in messages)  # type: ignore[index]
            assert "API key" in output and "roac is up" in output
            # The console is up too, and the banner says where its first operator signs up.
            assert f"console         http://127.0.0.1:{console}" in output
            assert "first operator: set a password at" in output
            assert httpx.get(f"http://127.0.0.1:{console}/readyz").status_code == 200
            # The console and the notifier call the APIs with keys of their own, scoped to what
            # each does; the development (operator) key stays with the person at the terminal.
            assert asyncio.run(_active_keys(infra.database_url)) == {
                "dev-console": sorted(s.value for s in ALL_SCOPES - {Scope.KEYS_ADMIN}),
                "dev-notifier-preferences": ["contacts:read"],
            }
        finally:
            up.send_signal(signal.SIGINT)
            code = up.wait(60)
            log.close()
        output = (tmp_path / "up.log").read_text()
        assert code == 0, output
        assert "roac matcher shut down gracefully" in output  # consumers finished their work
        assert "roac notifier shut down gracefully" in output
