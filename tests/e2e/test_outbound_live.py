"""The outbound guard (services/notifier/channels/outbound.py) against the live services, as
issue 17 asks: a webhook whose host resolves to 127.0.0.1 or 169.254.169.254 is refused at
connect time. Every other e2e stack opts in to 127.0.0.0/8 and plain HTTP for the fake
providers, so none of them can show loopback refused; the stack here opts in to nothing.

`localhost` is a name: no check before the request can refuse it, the guarded resolver does when
connecting. The numeric hosts that are not dotted IP literals (2852039166 is 169.254.169.254;
2130706433, 0x7f000001, 127.1 and 0177.0.0.1 are 127.0.0.1, as the C resolver reads them) are
refused by `check_url`, naming the address they stand for (before, aiohttp refused the decimal
ones as invalid URLs, which roac retried as a network error and parked). Every host is on
ROAC_WEBHOOK_ALLOWED_HOSTS, so the allow-list is not what stops them, and a TCP listener on the
port they name proves that nothing connected at all.

A second stack, with the usual opt-ins, posts a real introduction to the fake Mattermost and
Teams: whole-channel mentions and Markdown in the names arrive neutered in what the live
notifier posts, not only in the channel's integration tests.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from tests.e2e.conftest import Stack, new_person, run_id, running_stack
from tests.support.fake_providers import ProviderServer, fake_providers
from tests.support.infra import WEBHOOK_SIGNING_KEY, free_port

pytestmark = pytest.mark.e2e

LOOPBACK_NAMES = ("localhost", "2130706433", "0x7f000001", "127.1", "0177.0.0.1")
METADATA_NAME = "2852039166"  # 169.254.169.254 as one decimal number
RETRY_BASE_SECONDS = 1


class ConnectionCounter:
    """A TCP listener on 127.0.0.1 and, where the machine has IPv6, ::1 (the addresses
    `localhost` may resolve to), counting every connection accepted: a refusal at connect time
    means the count stays at zero, whatever would have been sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.accepted = 0
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            listener = socket.socket(family, socket.SOCK_STREAM)
            try:
                listener.bind((host, self.port))
            except OSError:
                listener.close()
                if family is socket.AF_INET:
                    raise
                continue  # no IPv6 loopback here: nothing can connect to it either
            listener.listen()
            listener.settimeout(0.1)
            self._sockets.append(listener)
        self._threads = [threading.Thread(target=self._accept, args=(s,)) for s in self._sockets]

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            connection.close()

    def __enter__(self) -> ConnectionCounter:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        for listener in self._sockets:
            listener.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[ConnectionCounter]:
    with ConnectionCounter() as counter:
        yield counter


# No private network allowed and HTTPS only, as in production by default.
GUARDED_ENV = {
    "ROAC_INTRO_MODE": "direct",
    "ROAC_MATCH_MIN_SCORE": "0.1",  # any shared topic will do
    "ROAC_QUIET_HOURS_ENABLED": "false",
    "ROAC_OUTBOUND_ALLOW_PRIVATE_NETWORKS": "",
    "ROAC_OUTBOUND_ALLOW_HTTP": "false",
    "ROAC_RETRY_BASE_SECONDS": str(RETRY_BASE_SECONDS),
    "ROAC_DELIVERY_MAX_ATTEMPTS": "3",
    "ROAC_WEBHOOK_ALLOWED_HOSTS": ",".join((*LOOPBACK_NAMES, METADATA_NAME)),
}
# The usual e2e opt-ins (127.0.0.0/8, plain HTTP, infra.py): the fake providers are reachable.
CHAT_ENV = {
    "ROAC_INTRO_MODE": "direct",
    "ROAC_MATCH_MIN_SCORE": "0.1",
    "ROAC_QUIET_HOURS_ENABLED": "false",
    "ROAC_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
}


@dataclass
class Stacks:
    """The two stacks of this file: the chat one may still be starting."""

    guarded: Stack
    chat_starting: Future[Stack]

    @property
    def chat(self) -> Stack:
        return self.chat_starting.result(timeout=120)


@pytest.fixture(scope="module")
def providers() -> Iterator[ProviderServer]:
    with fake_providers(WEBHOOK_SIGNING_KEY.encode()) as server:
        yield server


@pytest.fixture(scope="module")
def stacks(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    listener: ConnectionCounter,
    providers: ProviderServer,
) -> Iterator[Stacks]:
    """The guarded stack; the chat stack starts in a thread once it is up, while the guarded
    tests run, and the two stop side by side: a stack takes 8 to 17 s to start here and
    several to stop, and one after the other would take most of a minute. (Their ports are
    still chosen one stack after the other, after the listener's and the providers'.)"""
    guarded_stack = running_stack(
        "outbound", tmp_path_factory.mktemp("outbound-logs"), request, **GUARDED_ENV
    )
    chat_stack = running_stack("chat", tmp_path_factory.mktemp("chat-logs"), request, **CHAT_ENV)
    with ThreadPoolExecutor(1) as pool, guarded_stack as guarded:
        chat_starting = pool.submit(chat_stack.__enter__)
        try:
            yield Stacks(guarded, chat_starting)
        finally:
            pool.submit(_stop_once_started, chat_stack, chat_starting)


def _stop_once_started(stack: AbstractContextManager[Stack], starting: Future[Stack]) -> None:
    if starting.exception() is None:  # one that failed to start has stopped what it started
        stack.__exit__(None, None, None)


def _chat_person(run: str, index: int, channel: str, url: str, **extra: Any) -> dict[str, Any]:
    person = new_person(run, index, **extra)
    del person["email"]
    person["channels"] = [{"type": channel, "address": url}]
    return person


def _introduce(stack: Stack, pairs: list[tuple[dict[str, Any], dict[str, Any]]], run: str) -> None:
    """Each pair shares a topic of its own and nothing with the other pairs."""
    with stack.client() as client:
        people = [person for pair in pairs for person in pair]
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        for number, pair in enumerate(pairs):
            for person in pair:
                interest = {
                    "source": "e2e",
                    "external_id": person["external_id"],
                    "topic": f"kites {number} {run}",
                    "kind": "likes",
                }
                assert client.post("/v1/interests", json=interest).status_code == 202


async def _attempts(stack: Stack, external_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    """Each person's delivery attempts, oldest first, with the delivery's channel and status."""
    conn = await asyncpg.connect(stack.infra.database_url)
    try:
        rows = await conn.fetch(
            "SELECT d.recipient_external_id AS person, d.channel, d.status, a.outcome, a.detail "
            "FROM notifier.deliveries d JOIN notifier.delivery_attempts a ON a.delivery_id = d.id "
            "WHERE d.recipient_source = 'e2e' AND d.recipient_external_id = ANY($1::text[]) "
            "ORDER BY d.recipient_external_id, a.attempt",
            external_ids,
        )
    finally:
        await conn.close()
    found: dict[str, list[asyncpg.Record]] = {person: [] for person in external_ids}
    for row in rows:
        found[row["person"]].append(row)
    return found


def _settled_attempts(stack: Stack, people: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Once everyone has a first attempt, what they have after the time a retry would have
    taken (the first retry comes after RETRY_BASE_SECONDS, +-20 %)."""
    ids = [p["external_id"] for p in people]
    deadline = time.monotonic() + 20
    while not all((found := asyncio.run(_attempts(stack, ids))).values()):
        assert time.monotonic() < deadline, f"no attempt for {[i for i in ids if not found[i]]}"
        time.sleep(0.2)
    time.sleep(RETRY_BASE_SECONDS * 2.5)
    return asyncio.run(_attempts(stack, ids))


def _assert_refused_once(attempts: list[Any], channel: str, reason: str) -> None:
    assert len(attempts) == 1, [dict(a) for a in attempts]  # permanent: never retried
    [attempt] = attempts
    assert attempt["channel"] == channel and attempt["status"] == "failed", dict(attempt)
    assert attempt["outcome"] == "permanent", dict(attempt)
    assert attempt["detail"].startswith("destination refused: "), attempt["detail"]
    assert reason in attempt["detail"], attempt["detail"]
    assert "ROAC_WEBHOOK_ALLOWED_HOSTS" not in attempt["detail"]


def test_webhooks_at_localhost_are_refused_at_connect_time_for_good(
    stacks: Stacks, listener: ConnectionCounter
) -> None:
    """`localhost` is a name: no check before the request can refuse it; the guarded resolver
    refuses it when connecting, and nothing reaches the server listening there."""
    run = run_id()
    base = f"https://localhost:{listener.port}"
    generic = _chat_person(run, 0, "webhook", f"{base}/hook/{run}")
    mattermost = _chat_person(run, 1, "mattermost", f"{base}/mattermost/hooks/{run}")
    _introduce(stacks.guarded, [(generic, mattermost)], run)
    attempts = _settled_attempts(stacks.guarded, [generic, mattermost])
    for person, channel in ((generic, "webhook"), (mattermost, "mattermost")):
        _assert_refused_once(
            attempts[person["external_id"]], channel, "localhost resolves to 127.0.0.1, loopback"
        )
    assert listener.accepted == 0


# Each numeric name for 127.0.0.1 with a chat webhook of another kind, paired with a generic one.
NUMERIC_LOOPBACK_CHANNELS = {
    "2130706433": "slack_webhook",
    "0x7f000001": "discord",
    "127.1": "teams",
    "0177.0.0.1": "mattermost",
}


def test_numeric_names_for_loopback_and_the_metadata_address_are_refused_too(
    stacks: Stacks, listener: ConnectionCounter
) -> None:
    """Not dotted IP literals, yet addresses: each is refused as the address it stands for,
    permanently, and nothing connects to the listener."""
    run = run_id()
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    expected: dict[str, tuple[str, str]] = {}
    for number, (host, channel) in enumerate(NUMERIC_LOOPBACK_CHANNELS.items()):
        base = f"https://{host}:{listener.port}"
        pair = (
            _chat_person(run, 2 * number, "webhook", f"{base}/hook/{run}"),
            _chat_person(run, 2 * number + 1, channel, f"{base}/chat/{run}"),
        )
        pairs.append(pair)
        for person in pair:
            kind = person["channels"][0]["type"]
            expected[person["external_id"]] = (kind, f"{host} stands for 127.0.0.1, loopback")
    metadata = (
        _chat_person(run, 90, "webhook", f"https://{METADATA_NAME}/latest/meta-data/{run}"),
        _chat_person(run, 91, "discord", f"https://{METADATA_NAME}/api/webhooks/1/{run}"),
    )
    pairs.append(metadata)
    for person in metadata:
        expected[person["external_id"]] = (
            person["channels"][0]["type"],
            f"{METADATA_NAME} stands for 169.254.169.254, link-local (cloud metadata)",
        )
    _introduce(stacks.guarded, pairs, run)
    attempts = _settled_attempts(stacks.guarded, [p for pair in pairs for p in pair])
    for external_id, (channel, reason) in expected.items():
        _assert_refused_once(attempts[external_id], channel, reason)
    assert listener.accepted == 0


def _wait_for_post(providers: ProviderServer, path: str) -> Any:
    deadline = time.monotonic() + 20
    while not providers.state.at(path):
        assert time.monotonic() < deadline, f"nothing posted to {path}"
        time.sleep(0.1)
    time.sleep(0.5)  # a second post would be a bug: give it the time to show
    [only] = providers.state.at(path)
    return only.body


def test_names_posted_to_mattermost_and_teams_mention_nobody(
    stacks: Stacks, providers: ProviderServer
) -> None:
    """Each learns the other's name: in Mattermost's text and in the Teams card's title the
    whole-channel mentions are broken with a zero-width space and Markdown is escaped."""
    run = run_id()
    hook, flow = f"/mattermost/hooks/{run}", f"/teams/workflows/{run}"
    # Each reads the other's name: the Mattermost user reads Bo's, the Teams user Ada's.
    to_mattermost = _chat_person(
        run, 0, "mattermost", providers.url + hook, name=f"Ada @channel @all *{run}*"
    )
    to_teams = _chat_person(
        run, 1, "teams", providers.url + flow, name=f"Bo @channel @all <b>{run}"
    )
    _introduce(stacks.chat, [(to_mattermost, to_teams)], run)
    text = _wait_for_post(providers, hook)["text"]
    assert "Bo @\u200bchannel @\u200ball <b\\>" in text, text
    card = _wait_for_post(providers, flow)["attachments"][0]["content"]
    title = card["body"][0]["text"]
    assert title.startswith("Meet Ada @\u200bchannel @\u200ball \\*"), title
    for posted in (text, title, card["body"][1]["text"]):
        assert "@channel" not in posted and "@all" not in posted, posted
