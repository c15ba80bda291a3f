"""The console in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, or
CHROMIUM_PATH; never `playwright install`) against the live stack (the three services as
processes, tests/e2e/conftest.py) plus a console process with a key scoped as docs/console.md
says, and an operator account.

A missing browser FAILS these tests with what to install: `make test` installs it."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import Stack, running_stack
from tests.support.fake_providers import ProviderServer, fake_providers
from tests.support.infra import WEBHOOK_SIGNING_KEY, free_port
from tests.support.processes import ServiceProcess, run_roac
from tests.support.reader_key import READER_ENV, grant_reader

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# The scopes the console's key needs (docs/console.md), on every source.
CONSOLE_SCOPES = (
    "rounds:read",
    "rounds:write",
    "intros:read",
    "intros:write",
    "contacts:read",
    "contacts:erase",
    "events:write",
    "preferences:write",
    "resources:read",
    "resources:write",
)
OPERATOR = "ops@example.org"
PASSWORD = "a long enough passphrase"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests run last: the sync Playwright API keeps an event loop running in the
    main thread until the session ends, where asyncio.run and pytest-asyncio would refuse."""
    here = Path(__file__).parent
    items.sort(key=lambda item: Path(str(item.path)).is_relative_to(here))


@dataclass
class ConsoleStack:
    stack: Stack
    url: str
    process: ServiceProcess
    env: dict[str, str]
    providers: ProviderServer


def _roac(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = run_roac(env, *args)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="session")
def console_stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ConsoleStack]:
    logs = tmp_path_factory.mktemp("console-logs")
    with (
        fake_providers(WEBHOOK_SIGNING_KEY.encode()) as providers,
        running_stack(
            "browser",
            logs,
            request,
            ROAC_INTRO_MODE="double_opt_in",
            # Any shared topic will do for a live match, however few people there are yet.
            ROAC_MATCH_MIN_SCORE="0.1",
            # A webhook failing twice parks its delivery within seconds (the Deliveries page).
            ROAC_DELIVERY_MAX_ATTEMPTS="2",
            ROAC_RETRY_BASE_SECONDS="1",
            ROAC_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",  # the fake providers
            **READER_ENV,  # preferences pages read people back from the matcher
        ) as stack,
    ):
        grant_reader(stack.infra.database_url)
        scopes = [arg for scope in CONSOLE_SCOPES for arg in ("--scope", scope)]
        key = _roac(stack.env, "keys", "create", "console", *scopes, "--source", "*").stdout
        port = free_port()
        env = {
            **stack.env,
            "ROAC_CONSOLE_PORT": str(port),
            "ROAC_CONSOLE_API_KEY": key.strip(),
            "ROAC_CONSOLE_INGEST_URL": stack.ingest_url,
            "ROAC_CONSOLE_MATCHER_URL": stack.matcher_url,
            "ROAC_CONSOLE_NOTIFIER_URL": stack.notifier_url,
        }
        _roac(env, "operators", "create", OPERATOR, "--password", PASSWORD)
        process = ServiceProcess("console", env, f"http://127.0.0.1:{port}/readyz", logs)
        process.start()
        failed_before = request.session.testsfailed
        try:
            yield ConsoleStack(stack, f"http://127.0.0.1:{port}", process, env, providers)
        finally:
            process.stop()
            if request.session.testsfailed > failed_before:
                print(f"\n----- console log (last lines) -----\n{process.tail(60)}")


@pytest.fixture(scope="session", autouse=True)
def _stack_before_the_browser(console_stack: ConsoleStack) -> ConsoleStack:
    """The stack starts before Playwright: its set-up runs asyncio.run, which refuses to run
    inside the event loop the sync Playwright API keeps in this thread."""
    return console_stack


@pytest.fixture(scope="session")
def base_url(console_stack: ConsoleStack) -> str:
    """pytest-playwright's base_url: page.goto("/x") opens the console's /x."""
    return console_stack.url


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: the console's browser tests need Debian's chromium "
            "(`make test` installs it: apt-get install --no-install-recommends chromium "
            "fonts-liberation), or set CHROMIUM_PATH. Never `playwright install`.",
            pytrace=False,
        )
    return {**browser_type_launch_args, "executable_path": CHROMIUM}


def sign_in(page: Page, email: str = OPERATOR, password: str = PASSWORD) -> None:
    page.goto("/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def operator_page(page: Page) -> Page:
    """A page whose browser context is signed in."""
    sign_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Today")
    return page


def csrf_of(page: Page) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.content())
    assert found, "no CSRF token on the page"
    return found[1]
