"""Clear answers at the edges, against a live ingest process (its own vhost and database):

- an oversized body gets its 413 problem document with ordinary clients (urllib, requests,
  httpx write the whole body before reading the answer; shared/body_limit.py drains it);
- with PostgreSQL unreachable (ingest's database connections go through a proxy the test
  stops; the machine's PostgreSQL keeps running), requests with and without an
  Idempotency-Key get 202 or 503 with Retry-After, never 500 (shared/problems.py)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import requests

from services.database import migrate
from tests.support.infra import API_KEY, free_port, isolated_infra
from tests.support.processes import ServiceProcess
from tests.support.tcp_proxy import TcpProxy

POSTGRES_PORT = 5432


@dataclass
class Ingest:
    url: str
    proxy: TcpProxy
    database_up: bool = True

    def database_down(self) -> None:
        """Close the proxy: open connections cut, new ones refused."""
        if self.database_up:
            self.database_up = False
            self.proxy.stop()


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    with isolated_infra("edges") as infra:
        asyncio.run(migrate(infra.settings()))
        proxy = TcpProxy(POSTGRES_PORT)
        proxy.start()
        port = free_port()
        env = infra.env(
            ROAC_INGEST_PORT=port,
            ROAC_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{proxy.port}/{infra.database}",
            ROAC_DATABASE_POOL_SIZE=2,
        )
        url = f"http://127.0.0.1:{port}"
        logs: Path = tmp_path_factory.mktemp("edges-logs")
        process = ServiceProcess("ingest", env, f"{url}/readyz", logs)
        process.start()
        created = Ingest(url, proxy)
        try:
            yield created
        finally:
            process.stop()
            created.database_down()


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
        ingest.database_down()  # PostgreSQL unreachable for ingest: connections refused
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
