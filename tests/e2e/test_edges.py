"""Clear answers at the edges, against a live ingest process (its own vhost and database):

- an oversized body gets its 413 problem document with ordinary clients (urllib, requests,
  httpx write the whole body before reading the answer; shared/body_limit.py drains it);
- the drain is bounded: a body announced or sent far over 64 MiB, or a client that stalls,
  gets its 413 within seconds and the connection closed, as shared/body_limit.py promises (a
  raw socket, so no client library hides what the server did; marked xfail until the close
  happens), and the server goes on answering others;
- with PostgreSQL unreachable (ingest's database connections go through a proxy the test
  stops; the machine's PostgreSQL keeps running), requests with and without an
  Idempotency-Key get 202 or 503 with Retry-After, never 500 (shared/problems.py);
- with RabbitMQ unreachable (another ingest, whose AMQP connection goes through a proxy the
  test stops), POST /v1/contacts gets 503 with Retry-After, never 500: nothing was accepted."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import requests

from services.database import migrate
from shared.body_limit import DRAIN_MAX_BYTES, DRAIN_SECONDS
from tests.support.infra import AMQP_BASE, API_KEY, free_port, isolated_infra
from tests.support.processes import ServiceProcess
from tests.support.tcp_proxy import TcpProxy

POSTGRES_PORT = 5432
RABBITMQ_PORT = 5672
MIB = 1024 * 1024
INGEST_LIMIT = 2 * MIB  # ROAC_INGEST_MAX_BODY_BYTES' default


@dataclass
class Ingest:
    url: str
    proxy: TcpProxy  # to PostgreSQL, or (ingest_via_broker_proxy) to RabbitMQ
    proxy_open: bool = True

    def dependency_down(self) -> None:
        """Close the proxy: open connections cut, new ones refused."""
        if self.proxy_open:
            self.proxy_open = False
            self.proxy.stop()


@contextmanager
def _ingest_through(
    label: str, tmp_path_factory: pytest.TempPathFactory, target_port: int, **env: str | int
) -> Iterator[Ingest]:
    """An ingest of its own, on its own vhost and database, whose connection to `target_port`
    (PostgreSQL or RabbitMQ) goes through a proxy the test can close; `env` points the service
    at the proxy, with `{proxy}`, `{database}` and `{vhost}` filled in."""
    with isolated_infra(label) as infra:
        asyncio.run(migrate(infra.settings()))
        proxy = TcpProxy(target_port)
        proxy.start()
        port = free_port()
        vhost = infra.amqp_url.removeprefix(AMQP_BASE)
        settings = {
            key: str(value).format(proxy=proxy.port, database=infra.database, vhost=vhost)
            for key, value in env.items()
        }
        url = f"http://127.0.0.1:{port}"
        logs: Path = tmp_path_factory.mktemp(f"{label}-logs")
        process = ServiceProcess(
            "ingest", infra.env(ROAC_INGEST_PORT=port, **settings), f"{url}/readyz", logs
        )
        process.start()
        created = Ingest(url, proxy)
        try:
            yield created
        finally:
            process.stop()
            created.dependency_down()


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    with _ingest_through(
        "edges",
        tmp_path_factory,
        POSTGRES_PORT,
        ROAC_DATABASE_URL="postgresql://postgres@127.0.0.1:{proxy}/{database}",
        ROAC_DATABASE_POOL_SIZE=2,
    ) as created:
        yield created


def _huge_batch() -> bytes:
    items = [{"source": "crm", "external_id": f"{i}", "topic": "kites"} for i in range(50_000)]
    return json.dumps({"items": items}).encode()


HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def _is_413(status: int, body: bytes) -> None:
    assert status == 413
    problem = json.loads(body)
    assert problem["status"] == 413
    assert "exceeds" in problem["detail"]


def test_an_oversized_batch_gets_413_with_urllib(ingest: Ingest) -> None:
    request = urllib.request.Request(  # noqa: S310 - the test's own server
        f"{ingest.url}/v1/interests", data=_huge_batch(), headers=HEADERS, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310 - the test's own server
    _is_413(raised.value.code, raised.value.read())


def test_an_oversized_batch_gets_413_with_requests(ingest: Ingest) -> None:
    answer = requests.post(
        f"{ingest.url}/v1/interests", data=_huge_batch(), headers=HEADERS, timeout=30
    )
    _is_413(answer.status_code, answer.content)


def test_an_oversized_batch_gets_413_with_httpx_with_and_without_content_length(
    ingest: Ingest,
) -> None:
    body = _huge_batch()
    answer = httpx.post(f"{ingest.url}/v1/interests", content=body, headers=HEADERS, timeout=30)
    _is_413(answer.status_code, answer.content)

    def chunks() -> Iterator[bytes]:  # chunked transfer encoding: no Content-Length
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    answer = httpx.post(f"{ingest.url}/v1/interests", content=chunks(), headers=HEADERS, timeout=30)
    _is_413(answer.status_code, answer.content)


def test_with_the_database_down_requests_get_202_or_503_never_500(ingest: Ingest) -> None:
    run = uuid.uuid4().hex[:8]

    def interest(i: int) -> dict[str, str]:
        return {"source": "crm", "external_id": f"{run}-{i}", "topic": f"outage {run}"}

    with httpx.Client(base_url=ingest.url, headers=HEADERS, timeout=30) as client:
        keyed = client.post(
            "/v1/interests", json=interest(0), headers={"Idempotency-Key": f"before-{run}"}
        )
        assert keyed.status_code == 202, keyed.text
        ingest.dependency_down()  # PostgreSQL unreachable for ingest: connections refused
        statuses = []
        for i in range(6):
            plain = client.post("/v1/interests", json=interest(i))
            statuses.append(plain.status_code)
            keyed = client.post(
                "/v1/interests", json=interest(i), headers={"Idempotency-Key": f"k-{run}-{i}"}
            )
            statuses.append(keyed.status_code)
            assert keyed.status_code in (202, 503), keyed.text
            if keyed.status_code == 503:
                assert keyed.headers["Retry-After"].isdigit()
                assert keyed.headers["content-type"] == "application/problem+json"
                assert keyed.json()["status"] == 503
        assert 500 not in statuses
        assert set(statuses) <= {202, 503}
        assert 503 in statuses  # the keyed requests need the database


# The drain's bound, through a raw socket: what the server does, not what a client library makes
# of it.


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _head(length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        "POST /v1/interests HTTP/1.1\r\nHost: ingest\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n"
    ).encode()


@dataclass
class Ending:
    """How the server ended the exchange: what it answered (possibly nothing, when its close
    reset the connection first), whether the connection is closed, and when."""

    answer: bytes
    closed: bool
    seconds: float


def _read_until_closed(sock: socket.socket, within: float) -> Ending:
    start = time.monotonic()
    sock.settimeout(0.5)
    answer = b""
    while time.monotonic() - start < within:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset: the server closed with our bytes unread
            return Ending(answer, True, time.monotonic() - start)
        if not data:
            return Ending(answer, True, time.monotonic() - start)
        answer += data
    return Ending(answer, False, time.monotonic() - start)


def _still_answers(ingest: Ingest) -> None:
    assert httpx.get(f"{ingest.url}/healthz", timeout=5).status_code == 200


def test_a_body_announced_over_the_drain_bound_is_answered_at_once(ingest: Ingest) -> None:
    with _connect(ingest.url) as sock:
        sock.sendall(_head(16 * DRAIN_MAX_BYTES) + b'{"items": [' + b" " * MIB)
        ending = _read_until_closed(sock, within=5)
    assert ending.closed and ending.seconds < 3, ending
    assert ending.answer.startswith(b"HTTP/1.1 413"), ending.answer[:200]
    _still_answers(ingest)


def test_a_body_sent_far_over_the_drain_bound_is_not_read_for_ever(ingest: Ingest) -> None:
    """Chunked (nothing announced) and as fast as the socket takes it: the server reads the
    limit and the drain's 64 MiB at most, then answers or closes; the sender is stopped by a
    reset or a full socket, never by having sent all it meant to."""
    meant = 8 * DRAIN_MAX_BYTES
    chunk = b"%x\r\n%s\r\n" % (MIB, b" " * MIB)
    sent = 0
    stopped_by: list[str] = []
    with _connect(ingest.url) as sock:
        sock.sendall(_head(None))

        def send() -> None:
            nonlocal sent
            try:
                while sent < meant:
                    sock.sendall(chunk)  # blocks up to the socket's 5 s timeout when unread
                    sent += MIB
                stopped_by.append("sent everything")
            except TimeoutError:
                stopped_by.append("not read")
            except OSError as exc:
                stopped_by.append(type(exc).__name__)

        sender = threading.Thread(target=send, daemon=True)
        started = time.monotonic()
        sender.start()
        ending = _read_until_closed(sock, within=15)
        sender.join(10)
        took = time.monotonic() - started
    assert not sender.is_alive()
    assert stopped_by and stopped_by != ["sent everything"], (stopped_by, sent)
    # The limit, the drain and what the sockets' buffers hold: not the 512 MiB meant.
    assert sent <= INGEST_LIMIT + DRAIN_MAX_BYTES + 64 * MIB, sent
    assert ending.closed and took < 15, (ending, took)
    if ending.answer:  # unless the close reset the connection before it could be read
        assert ending.answer.startswith(b"HTTP/1.1 413"), ending.answer[:200]
    _still_answers(ingest)


def test_a_client_that_stalls_mid_body_is_answered_when_the_drain_gives_up(
    ingest: Ingest,
) -> None:
    """Over the limit but within the drain bound, then nothing more: the drain waits
    DRAIN_SECONDS, not for ever, and the answer comes with the connection closed."""
    with _connect(ingest.url) as sock:
        sock.sendall(_head(INGEST_LIMIT + MIB) + b'{"items": [')
        ending = _read_until_closed(sock, within=DRAIN_SECONDS + 5)
    assert ending.closed, ending
    assert DRAIN_SECONDS - 1 <= ending.seconds <= DRAIN_SECONDS + 3, ending
    assert ending.answer.startswith(b"HTTP/1.1 413"), ending.answer[:200]
    _still_answers(ingest)


# RabbitMQ down: an ingest of its own whose AMQP connection goes through a proxy.


@pytest.fixture(scope="module")
def ingest_via_broker_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    with _ingest_through(
        "edges-broker",
        tmp_path_factory,
        RABBITMQ_PORT,
        ROAC_AMQP_URL="amqp://guest:guest@127.0.0.1:{proxy}/{vhost}",
    ) as created:
        yield created


def test_with_rabbitmq_down_contacts_get_503_with_retry_after_never_500(
    ingest_via_broker_proxy: Ingest,
) -> None:
    ingest = ingest_via_broker_proxy
    run = uuid.uuid4().hex[:8]

    def contact(i: int) -> dict[str, str]:
        return {"source": "crm", "external_id": f"{run}-{i}", "name": f"Ada {i}"}

    with httpx.Client(base_url=ingest.url, headers=HEADERS, timeout=30) as client:
        before = client.post("/v1/contacts", json=contact(0))
        assert before.status_code == 202, before.text
        ingest.dependency_down()  # RabbitMQ unreachable for ingest: connections cut, refused
        statuses = []
        started = time.monotonic()
        for i in range(1, 5):
            answer = client.post("/v1/contacts", json=contact(i))
            statuses.append(answer.status_code)
            assert answer.status_code != 500, answer.text
            if answer.status_code == 503:
                assert answer.headers["Retry-After"].isdigit()
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.json()["status"] == 503
        took = time.monotonic() - started
    assert statuses == [503] * len(statuses), statuses  # nothing can be confirmed now
    assert took < 20, took
