"""The OpenAPI documents in docs/ are what the running services serve: for the matcher and the
notifier, docs are generated from their routers on an app of their own (their real apps open
pools and brokers while being built), and this shows nothing is lost that way."""

from __future__ import annotations

import json

import httpx
import pytest

from services.api_docs import DOCS_DIR
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


def test_each_service_serves_the_checked_in_openapi_document(stack: Stack) -> None:
    for service, url in (
        ("ingest", stack.ingest_url),
        ("matcher", stack.matcher_url),
        ("notifier", stack.notifier_url),
    ):
        served = httpx.get(f"{url}/openapi.json", timeout=10).json()
        checked_in = json.loads((DOCS_DIR / "openapi" / f"{service}.json").read_text("utf-8"))
        assert served == checked_in, f"{service} serves another OpenAPI document: `make docs`"
