"""Schemathesis against the live services (real API keys, RabbitMQ and PostgreSQL): every
operation of ingest's, the matcher's and the notifier's OpenAPI documents, valid and invalid
input, with a key holding every scope and with a narrow one (`events:write` for the source
`crm` only, so most operations answer 403), must answer without a 5xx and as documented
(status code, content type, body schema); and the notifier's public link pages (no key; fuzzed
tokens are never valid) likewise.

Each operation's `security` names the scopes it needs, and the fuzz holds the services to it: an
operation needing a scope the key lacks answers 403 naming that scope, and the full key is never
refused."""

from __future__ import annotations

import json
import subprocess
import sys
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

from shared.scopes import DEFAULT_SCOPES, Grant, Scope
from tests.e2e.conftest import Stack, running_stack
from tests.support.infra import API_KEY

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).parents[2] / "docs" / "openapi"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Few examples per operation from a derandomized search: the same cases on every run, in well
# under a minute per service on a CI runner.
CONFIG = schemathesis.Config.from_dict(
    {"generation": {"max-examples": 60, "deterministic": True, "database": "none"}}
)
# The checked-in documents (the fixture proves the live services serve the same ones): pytest
# 9.2 dropped the node attribute that schemathesis' lazy `from_fixture` schemas rename.
ingest_schema = schemathesis.openapi.from_path(DOCS / "ingest.json", config=CONFIG)
matcher_schema = schemathesis.openapi.from_path(DOCS / "matcher.json", config=CONFIG)
notifier_schema = schemathesis.openapi.from_path(DOCS / "notifier.json", config=CONFIG)
links_schema = schemathesis.openapi.from_path(DOCS / "notifier-links.json", config=CONFIG)

# What each key may do: ROAC_API_KEYS' key everything, `roac keys create narrow --source crm`
# the default scopes for `crm` only.
GRANTS = {
    "full": Grant.everything("test"),
    "narrow": Grant("narrow", DEFAULT_SCOPES, frozenset({"crm"})),
}
# Answered before any route's dependencies run, so before the scope check: no route for the path
# (a fuzzed id holding a slash), a body that is not JSON, a body over the limit.
BEFORE_AUTHORISATION = {400, 404, 413}


@pytest.fixture(scope="module")
def fuzzed(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The three services on their own vhost and database; fuzzed events introduce nobody
    anyone reads."""
    with running_stack(
        "fuzz", tmp_path_factory.mktemp("fuzz-logs"), request, ROAC_INTRO_MODE="direct"
    ) as stack:
        for name, url in (
            ("ingest", stack.ingest_url),
            ("matcher", stack.matcher_url),
            ("notifier", stack.notifier_url),
        ):
            served = httpx.get(f"{url}/openapi.json", timeout=10).json()
            assert served == json.loads((DOCS / f"{name}.json").read_text()), "run `make docs`"
        yield stack


@pytest.fixture(scope="module")
def keys(fuzzed: Stack) -> dict[str, str]:
    created = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "create", "narrow", "--source", "crm"],
        env=fuzzed.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {"full": API_KEY, "narrow": created.stdout.strip()}


def _scopes_needed(case: schemathesis.Case[Any]) -> list[Scope]:
    """The scopes the operation's security requirement names (shared/authorization.py)."""
    requirements = case.operation.definition.raw.get("security", [])
    return [
        Scope(name)
        for requirement in requirements
        for names in requirement.values()
        for name in names
    ]


def _call(case: schemathesis.Case[Any], base_url: str, keys: dict[str, str], key_name: str) -> None:
    # Schemathesis fills a documented bearer scheme with a token of its own, which would take
    # precedence over a header passed to the call: every case would be a 401. Its negative
    # cases still leave the header out on purpose.
    case.headers["Authorization"] = f"Bearer {keys[key_name]}"
    response = case.call_and_validate(base_url=base_url, checks=CHECKS)
    status = response.status_code
    if "Authorization" not in response.request.headers:
        assert status == 401, f"{case.operation.label} answered {status} without a key"
        return
    assert status != 401, f"{key_name} is a valid key: {response.text}"
    if response.request.method != case.operation.method.upper():
        # Schemathesis' unsupported-method case: a 405, or another route of the same path
        # (GET /v1/contacts/{source}/{external_id:path} takes .../preferences too).
        return
    grant = GRANTS[key_name]
    lacking = [scope for scope in _scopes_needed(case) if not grant.allows(scope)]
    if lacking and status not in BEFORE_AUTHORISATION:
        assert status == 403, f"{case.operation.label} needs {lacking[0]}: answered {status}"
        assert repr(lacking[0].value) in response.json()["detail"]
    if grant.sources is None:  # every scope, every source: nothing to refuse
        assert status != 403, response.text


KEY_NAMES = pytest.mark.parametrize("key_name", ["full", "narrow"])


@KEY_NAMES
@ingest_schema.parametrize()
def test_every_ingest_operation_answers_as_documented(
    case: schemathesis.Case[Any], fuzzed: Stack, keys: dict[str, str], key_name: str
) -> None:
    _call(case, fuzzed.ingest_url, keys, key_name)


@KEY_NAMES
@matcher_schema.parametrize()
def test_every_matcher_operation_answers_as_documented(
    case: schemathesis.Case[Any], fuzzed: Stack, keys: dict[str, str], key_name: str
) -> None:
    _call(case, fuzzed.matcher_url, keys, key_name)


@KEY_NAMES
@notifier_schema.parametrize()
def test_every_notifier_operation_answers_as_documented(
    case: schemathesis.Case[Any], fuzzed: Stack, keys: dict[str, str], key_name: str
) -> None:
    _call(case, fuzzed.notifier_url, keys, key_name)


@links_schema.parametrize()
def test_every_link_page_answers_as_documented(case: schemathesis.Case[Any], fuzzed: Stack) -> None:
    # Public: no key. A fuzzed token is never a signed one, so pages refuse it (400, 404).
    case.call_and_validate(base_url=fuzzed.env["ROAC_PUBLIC_URL"], checks=CHECKS)
