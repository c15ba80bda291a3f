"""Schemathesis against the live ingest process (real API key, RabbitMQ and PostgreSQL): every
operation of its OpenAPI document, valid and invalid input, must answer without a 5xx and as
documented (status code, content type, body schema)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.database import migrate
from tests.support.infra import API_KEY, free_port, isolated_infra
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.e2e

DOCUMENT = Path(__file__).parents[2] / "docs" / "openapi" / "ingest.json"
AUTHORIZATION = {"Authorization": f"Bearer {API_KEY}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Few examples per operation from a derandomized search: the same cases on every run, in well
# under a minute on a CI runner.
CONFIG = schemathesis.Config.from_dict(
    {"generation": {"max-examples": 100, "deterministic": True, "database": "none"}}
)
# The checked-in document (the fixture proves the live service serves the same one): pytest
# 9.2 dropped the node attribute that schemathesis' lazy `from_fixture` schemas rename.
schema = schemathesis.openapi.from_path(DOCUMENT, config=CONFIG)


@pytest.fixture(scope="module")
def ingest_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Ingest alone, on its own vhost and database: fuzzed events reach no matcher."""
    with isolated_infra("fuzz") as infra:
        port = free_port()
        asyncio.run(migrate(infra.settings()))
        url = f"http://127.0.0.1:{port}"
        ingest = ServiceProcess(
            "ingest",
            infra.env(ROAC_INGEST_PORT=port),
            f"{url}/readyz",
            tmp_path_factory.mktemp("fuzz-logs"),
        )
        ingest.start()
        try:
            served = httpx.get(f"{url}/openapi.json", timeout=10).json()
            assert served == json.loads(DOCUMENT.read_text()), "run `make docs`"
            yield url
        finally:
            ingest.stop()


@schema.parametrize()
def test_every_operation_answers_as_documented(
    case: schemathesis.Case[Any], ingest_url: str
) -> None:
    case.call_and_validate(base_url=ingest_url, headers=AUTHORIZATION, checks=CHECKS)
