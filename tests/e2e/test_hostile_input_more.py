"""Hostile characters everywhere else a caller can put text (issue 17, "hostile input
contained"), against the live services: every string path and query parameter of every
operation the OpenAPI documents list (docs/openapi/*.json, so a new route is covered as soon as
it is documented), and the request body fields of the operator routes (rounds, pools, pool
previews, preferences, blocks, unmerges, API keys, resources, feedback, retries). Each is sent
holding, in turn, a NUL, ESC, DEL, a C1 control (U+0085), a right-to-left override, a
left-to-right isolate, a left-to-right mark and a line feed, and must be a 422 naming the field
(`errors[].field` of the problem document), never a 5xx, never accepted, and never echoing the
character back. The public link and preference pages have no field to name: there a refused
token is a plain 400 or 404. (Contact and interest bodies, and the AMQP ingress:
test_hostile_input.py; the rule itself: tests/unit/test_text_safety.py.)"""

from __future__ import annotations

import json
import uuid
from copy import deepcopy
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.test_hostile_input import CHARS
from tests.support.infra import API_KEY

pytestmark = pytest.mark.e2e

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi"
# Which running service answers each document's paths.
DOCUMENTS = ("ingest", "matcher", "notifier", "notifier-links")
PUBLIC = "notifier-links"  # the pages people open from a message: no API key, no field names

# A valid value for a string parameter that has neither a format nor an enum, by name. A new
# parameter with a pattern none of these fits fails `test_the_fillers_alone_are_valid`: add it.
FILLERS = {
    "source": "e2e",
    "external_id": "probe-1",
    "name": "probe-key",
    "topic": "kites",
    "token": "probe-token",
    "pool": "everyone",
    "q": "probe",
    "state": "asked",
    "status": "parked",
}
FORMATTED = {"uuid": str(uuid.UUID(int=7)), "date-time": "2030-01-01T00:00:00Z"}


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The parameter's own schema: a `$ref` followed, and `X | None` reduced to X."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return _resolve(document, document["components"]["schemas"][name])
    for option in schema.get("anyOf", []):
        resolved = _resolve(document, option)
        if resolved.get("type") != "null":
            return resolved
    return schema


def _filler(name: str, schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return str(schema["enum"][0])
    if schema.get("format") in FORMATTED:
        return FORMATTED[schema["format"]]
    return FILLERS.get(name, "probe")


def _string_parameters() -> list[tuple[str, str, str, dict[str, Any], str]]:
    """(document, method, path, {place.name: (schema, filler)} of the operation's path and query
    parameters, the string one to make hostile), for every operation of every document."""
    found = []
    for doc in DOCUMENTS:
        document = json.loads((OPENAPI / f"{doc}.json").read_text())
        for path, operations in document["paths"].items():
            shared = operations.get("parameters", [])
            for method, operation in operations.items():
                if method == "parameters":
                    continue
                params: dict[str, Any] = {}
                for param in shared + operation.get("parameters", []):
                    if param["in"] not in ("path", "query"):
                        continue
                    schema = _resolve(document, param.get("schema", {}))
                    params[f"{param['in']}.{param['name']}"] = {
                        "schema": schema,
                        "required": param.get("required", False),
                        "filler": _filler(param["name"], schema),
                    }
                for target, param in params.items():
                    if param["schema"].get("type") == "string":
                        found.append((doc, method.upper(), path, params, target))
    return found


PARAMETERS = _string_parameters()
# A line feed in a person's id too: `{external_id:person_id}` matches it, so the answer is the
# field's 422, not a 404 from no route matching (shared/person_path.py).
PARAMETER_CASES = [pytest.param(*p, char) for p in PARAMETERS for char in CHARS]


def _parameter_id(value: object) -> str:
    if isinstance(value, dict):
        return "-"
    return "-".join(value) if isinstance(value, tuple) else str(value)


def _base_url(stack: Stack, doc: str) -> str:
    if doc == PUBLIC:
        return f"http://127.0.0.1:{stack.env['ROAC_NOTIFIER_PUBLIC_PORT']}"
    return {"ingest": stack.ingest_url, "matcher": stack.matcher_url}.get(doc, stack.notifier_url)


def _inserted(value: str, char: str) -> str:
    middle = len(value) // 2
    return value[:middle] + char + value[middle:]


def problems(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body = response.json()
    assert body["status"] == response.status_code
    return {e["field"]: e["message"] for e in body["errors"]}


def _send(stack: Stack, doc: str, method: str, path: str, values: dict[str, str]) -> httpx.Response:
    """`method path` with these `{place.name: value}` path and query parameters, no body: a
    route's body errors are listed beside a parameter's, never instead of it."""
    url = path
    for name, value in values.items():
        place, _, field = name.partition(".")
        if place == "path":
            url = url.replace(f"{{{field}}}", quote(value, safe=""))
    query = {n.partition(".")[2]: v for n, v in values.items() if n.startswith("query.")}
    return httpx.request(
        method,
        _base_url(stack, doc) + url,
        params=query,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )


def test_the_documents_list_the_parameters_this_test_relies_on() -> None:
    # Guards against a silently empty parametrisation (a renamed document, a changed layout).
    named = {(doc, path, target) for doc, _, path, _, target in PARAMETERS}
    for expected in [
        ("ingest", "/v1/interests/{source}/{external_id}", "query.topic"),
        ("ingest", "/v1/keys/{name}", "path.name"),
        ("matcher", "/v1/contacts", "query.q"),
        ("matcher", "/v1/rounds", "query.pool"),
        ("notifier", "/v1/intros", "query.state"),
        ("notifier-links", "/links/{token}", "path.token"),
    ]:
        assert expected in named, expected


OPERATIONS = sorted(
    {(doc, method, path): params for doc, method, path, params, _ in PARAMETERS}.items()
)


@pytest.mark.parametrize(("operation", "params"), OPERATIONS, ids=_parameter_id)
def test_the_fillers_alone_are_valid(
    stack: Stack, operation: tuple[str, str, str], params: dict[str, Any]
) -> None:
    # Without the character, no parameter is refused: the 422s below come from the character,
    # not from a filler that does not fit (a new parameter's pattern: add it to FILLERS).
    doc, method, path = operation
    fillers = {
        name: param["filler"]
        for name, param in params.items()
        if param["required"] or param["schema"].get("type") == "string"
    }
    response = _send(stack, doc, method, path, fillers)
    assert response.status_code < 500, response.text
    if response.status_code == 422:
        named = problems(response)
        assert not [f for f in named if f.startswith(("path.", "query."))], response.text


@pytest.mark.parametrize(
    ("doc", "method", "path", "params", "target", "char"), PARAMETER_CASES, ids=_parameter_id
)
def test_every_string_parameter_refuses_the_character_naming_it(
    stack: Stack,
    doc: str,
    method: str,
    path: str,
    params: dict[str, Any],
    target: str,
    char: str,
) -> None:
    values = {
        name: _inserted(param["filler"], CHARS[char]) if name == target else param["filler"]
        for name, param in params.items()
        if param["required"] or name == target
    }
    response = _send(stack, doc, method, path, values)
    assert response.status_code < 500, response.text
    if doc == PUBLIC:
        # An HTML page: it holds line feeds of its own, never the token sent.
        assert response.status_code in (400, 404), response.text
        assert values[target] not in response.text and quote(values[target]) not in response.text
        if char != "lf":
            assert CHARS[char] not in response.text
        return
    assert CHARS[char] not in response.text
    assert response.status_code == 422, response.text
    assert target in problems(response), response.text


# --- Request bodies ----------------------------------------------------------------------------

PERSON = "/v1/contacts/e2e/hostile-probe"
WEEKLY = {"weekdays": ["mon"], "at": "09:00", "timezone": "Europe/Berlin"}
SELECTOR = {"tags": ["hostile"], "sources": ["e2e"], "organizations": ["Acme"]}
Loc = tuple[str | int, ...]
# (service, path, a valid body, the string fields to make hostile in it), POSTed.
BODIES: list[tuple[str, str, dict[str, Any], list[Loc]]] = [
    ("matcher", "/v1/rounds", {"pool": "everyone", "dry_run": True}, [("pool",)]),
    (
        "matcher",
        "/v1/pools",
        {"name": "hostile-probe", "selector": SELECTOR, "schedule": WEEKLY},
        [
            ("name",),
            ("selector", "tags", 0),
            ("selector", "sources", 0),
            ("selector", "organizations", 0),
            ("schedule", "weekdays", 0),
            ("schedule", "at"),
            ("schedule", "timezone"),
        ],
    ),
    (
        "matcher",
        "/v1/pools",
        {"name": "hostile-probe", "schedule": {"cron": "0 9 * * mon", "timezone": "UTC"}},
        [("schedule", "cron")],
    ),
    (
        "matcher",
        "/v1/pools/preview",
        SELECTOR,
        [("tags", 0), ("sources", 0), ("organizations", 0)],
    ),
    (
        "matcher",
        f"{PERSON}/blocks",
        {"source": "e2e", "external_id": "other"},
        [("source",), ("external_id",)],
    ),
    ("matcher", f"{PERSON}/unmerge", {"merge_id": FORMATTED["uuid"]}, [("merge_id",)]),
    (
        "matcher",
        "/v1/resources",
        {"url": "https://example.org/", "title": "Kites", "topics": ["kites"]},
        [("url",), ("title",), ("topics", 0)],
    ),
    (
        "matcher",
        "/v1/resources/preview",
        {"topics": ["kites"], "url": "https://example.org/"},
        [("topics", 0), ("url",)],
    ),
    (
        "matcher",
        f"/v1/intros/{FORMATTED['uuid']}/feedback",
        {"outcome": "met"},
        [("outcome",)],
    ),
    (
        "ingest",
        f"{PERSON}/preferences",
        {"language": "de-AT", "paused_until": "2030-01-01T00:00:00+00:00"},
        [("language",), ("paused_until",)],
    ),
    (
        "ingest",
        "/v1/keys",
        {"name": "hostile-probe", "scopes": ["events:write"], "sources": ["e2e"]},
        [("name",), ("scopes", 0), ("sources", 0)],
    ),
    ("notifier", "/v1/deliveries/retry", {"deliveries": [FORMATTED["uuid"]]}, [("deliveries", 0)]),
]
BODY_CASES = [
    (service, path, body, loc, char)
    for service, path, body, locs in BODIES
    for loc in locs
    for char in CHARS
]


def dotted(loc: Loc) -> str:
    """`selector.tags[0]`, as the problem documents name a field."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _body_id(value: object) -> str:
    if isinstance(value, tuple):
        return dotted(value)
    return "-" if isinstance(value, dict) else str(value)


def hostile_body(body: dict[str, Any], loc: Loc, char: str) -> dict[str, Any]:
    """`body` with `char` in the middle of the field at `loc`."""
    changed = deepcopy(body)
    target: Any = changed
    for part in loc[:-1]:
        target = target[part]
    target[loc[-1]] = _inserted(target[loc[-1]], CHARS[char])
    return changed


@pytest.mark.parametrize(("service", "path", "body", "loc", "char"), BODY_CASES, ids=_body_id)
def test_every_body_field_refuses_the_character_naming_it(
    stack: Stack, service: str, path: str, body: dict[str, Any], loc: Loc, char: str
) -> None:
    response = httpx.post(
        _base_url(stack, service) + path,
        json=hostile_body(body, loc, char),
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert list(problems(response)) == [dotted(loc)], response.text
    assert CHARS[char] not in response.text


def test_a_key_s_bad_source_is_named_and_a_good_one_still_creates_the_key(stack: Stack) -> None:
    # Once a 422 with an empty `errors` list: create_key refused the source, naming no field.
    name = f"probe-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=stack.ingest_url, headers=headers, timeout=30) as ingest:
        for sources, field in ((["e2e", "Not A Source"], "sources[1]"), ([" ", ""], "sources")):
            refused = ingest.post("/v1/keys", json={"name": name, "sources": sources})
            assert refused.status_code == 422, refused.text
            assert list(problems(refused)) == [field]
        created = ingest.post("/v1/keys", json={"name": name, "sources": [" e2e ", "", "crm"]})
        assert created.status_code == 201, created.text
        listed = {k["name"]: k for k in ingest.get("/v1/keys").json()["keys"]}
        assert listed[name]["sources"] == ["crm", "e2e"]
        assert ingest.delete(f"/v1/keys/{name}").json() == {"revoked": 1}
