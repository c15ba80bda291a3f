"""docs/api.md's scope table names every protected route with the scopes it needs, as the
services declare them (`requires(...)` in shared/authorization.py, which is also what each
operation's `security` says in the OpenAPI documents); and every protected operation documents
the 401 and 403 it can answer. A route added without a row, or a scope changed without the
table, fails here rather than in an integrator's hands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from services.api_docs import openapi_documents
from shared.scopes import Scope

API_MD = Path(__file__).parents[2] / "docs" / "api.md"
SERVICES = ("ingest", "matcher", "notifier")
ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`?\s]*)[^`]*`")
SCOPE_NAME = re.compile(r"`([a-z]+:[a-z]+)`")
# (service, method, path with its parameters unnamed): the scopes it needs.
Protected = dict[tuple[str, str, str], frozenset[str]]


def _unnamed(path: str) -> str:
    """`/v1/rounds/{round_id}` and the table's `/v1/rounds/{id}` are the same route."""
    return re.sub(r"\{[^}]*\}", "{}", path)


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    return {name: openapi_documents()[f"openapi/{name}.json"] for name in SERVICES}


def _declared(documents: dict[str, dict[str, Any]]) -> Protected:
    protected: Protected = {}
    for service, document in documents.items():
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                scopes = {
                    scope
                    for requirement in operation.get("security", [])
                    for names in requirement.values()
                    for scope in names
                }
                if scopes:
                    protected[service, method.upper(), _unnamed(path)] = frozenset(scopes)
    return protected


def _tabled() -> Protected:
    text = API_MD.read_text("utf-8")
    table = text.split("| route | scope | source-bound |", 1)[1].split("\n\n", 1)[0]
    protected: Protected = {}
    for row in table.strip().splitlines()[1:]:  # after the |---| line
        route_cell, scope_cell = row.strip("|").split("|")[:2]
        service = route_cell.split()[0]
        scopes = frozenset(SCOPE_NAME.findall(scope_cell))
        for method, path in ROUTE.findall(route_cell):
            key = (service, method, _unnamed(path))
            assert key not in protected, f"{key} has two rows in docs/api.md"
            protected[key] = scopes
    return protected


def test_the_table_names_every_protected_route_with_its_scopes(
    documents: dict[str, dict[str, Any]],
) -> None:
    declared, tabled = _declared(documents), _tabled()
    missing = {k: sorted(v) for k, v in declared.items() if k not in tabled}
    stale = sorted(k for k in tabled if k not in declared)
    wrong = {
        k: {"table": sorted(tabled[k]), "code": sorted(v)}
        for k, v in declared.items()
        if k in tabled and tabled[k] != v
    }
    assert not missing, f"add to docs/api.md's scope table: {missing}"
    assert not stale, f"docs/api.md's scope table names routes that are not protected: {stale}"
    assert not wrong, f"docs/api.md's scope table says other scopes than the code: {wrong}"


def test_every_v1_operation_states_its_scopes_and_its_refusals(
    documents: dict[str, dict[str, Any]],
) -> None:
    for service, document in documents.items():
        schemes = document["components"]["securitySchemes"]
        assert schemes["HTTPBearer"] == {
            "type": "http",
            "scheme": "bearer",
            "description": schemes["HTTPBearer"]["description"],
        }
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                where = f"{service} {method.upper()} {path}"
                if not path.startswith("/v1/"):  # /healthz, /readyz, /metrics: open
                    assert "security" not in operation, where
                    continue
                # One requirement: every scope named is needed (several would mean any one).
                [requirement] = operation["security"]
                [(scheme, scopes)] = requirement.items()
                assert scheme == "HTTPBearer" and scopes, where
                assert {Scope(s) for s in scopes}, where  # known scopes only
                for status in ("401", "403"):
                    answer = operation["responses"].get(status)
                    assert answer, f"{where} does not document {status}"
                    assert "application/problem+json" in answer["content"], where


def test_the_public_pages_need_no_key() -> None:
    links = openapi_documents()["openapi/notifier-links.json"]
    assert "securitySchemes" not in links.get("components", {})
    for operations in links["paths"].values():
        for operation in operations.values():
            assert "security" not in operation
