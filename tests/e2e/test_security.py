"""The trust boundary against the live services: scoped keys bound to their sources, link keys
apart from every other secret and rotatable, refused placeholder secrets, and the notifier's
public pages apart from its operations port."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.notifier.channels.webhook_signing import destination_secret
from services.notifier.links import LinkAction, LinkClaim, LinkKeyring, sign_legacy
from shared.secret_policy import KNOWN_PLACEHOLDERS, new_secret
from tests.e2e.conftest import Stack, new_person, run_id, running_stack
from tests.support.infra import API_KEY, LINK_KEY, WEBHOOK_SIGNING_KEY
from tests.support.processes import ServiceProcess, run_roac
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def secure(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    with running_stack(
        "security",
        tmp_path_factory.mktemp("security-logs"),
        request,
        ROAC_INTRO_MODE="double_opt_in",
        ROAC_MATCH_MIN_SCORE="0.1",
        ROAC_QUIET_HOURS_ENABLED="false",
    ) as stack:
        yield stack


def _roac(
    stack: Stack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_roac({**stack.env, **(env or {})}, *args)


def _create_key(stack: Stack, name: str, *options: str) -> str:
    created = _roac(stack, "keys", "create", name, *options)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def _client(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=15)


def _status(client: httpx.Client, method: str, url: str, **kwargs: Any) -> int:
    return client.request(method, url, **kwargs).status_code


def test_an_events_key_bound_to_crm_writes_crm_people_and_nothing_else(secure: Stack) -> None:
    run = run_id()
    name = f"crm{run}"
    key = _create_key(secure, name, "--scope", "events:write", "--source", "crm")
    crm = {
        "source": "crm",
        "external_id": f"{run}-1",
        "name": "Ada Quinn",
        "email": f"a{run}@example.org",
    }
    forum = {**crm, "source": "forum"}
    with _client(secure.ingest_url, key) as ingest:
        # A new key is seen by the running services at once (NOTIFY) or within seconds.
        eventually(lambda: _status(ingest, "POST", "/v1/contacts", json=crm) == 202)
        refused = ingest.post("/v1/contacts", json=forum)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert "forum" in refused.json()["detail"]
        batch = ingest.post(
            "/v1/contacts", json={"items": [crm, forum]}, params={"partial": "true"}
        )
        assert batch.status_code == 403  # a foreign source is not a validation error to skip
        interest = {"source": "forum", "external_id": "x", "topic": "kites", "kind": "likes"}
        assert _status(ingest, "POST", "/v1/interests", json=interest) == 403
        erase = ingest.delete(f"/v1/contacts/forum/{run}-1")
        assert erase.status_code == 403 and "'contacts:erase'" in erase.json()["detail"]
        assert _status(ingest, "DELETE", f"/v1/contacts/crm/{run}-1") == 403  # no erase scope
        assert _status(ingest, "POST", f"/v1/contacts/forum/{run}-1/opt-out") == 403
        assert _status(ingest, "GET", "/v1/keys") == 403
    with _client(secure.matcher_url, key) as matcher:
        rounds = matcher.post("/v1/rounds", json={"pool": "everyone"})
        assert rounds.status_code == 403 and "'rounds:write'" in rounds.json()["detail"]
        resource = {"url": "https://example.org/a", "title": "A", "topics": ["kites"]}
        resources = matcher.post("/v1/resources", json=resource)
        assert resources.status_code == 403 and "'resources:write'" in resources.json()["detail"]
        assert _status(matcher, "GET", "/v1/pools") == 403
    with _client(secure.notifier_url, key) as notifier:
        intros = notifier.get("/v1/intros")
        assert intros.status_code == 403 and "'intros:read'" in intros.json()["detail"]
    metrics = httpx.get(f"{secure.ingest_url}/metrics", timeout=5).text
    assert f'roac_api_key_requests_total{{key="{name}"}}' in metrics
    assert f'roac_api_key_refusals_total{{key="{name}",scope="events:write"}}' in metrics


def test_an_erase_key_for_crm_erases_crm_people_only(secure: Stack) -> None:
    run = run_id()
    key = _create_key(secure, f"eraser{run}", "--scope", "contacts:erase", "--source", "crm")
    with _client(secure.ingest_url, key) as ingest:
        eventually(lambda: _status(ingest, "DELETE", f"/v1/contacts/crm/{run}") == 202)
        assert _status(ingest, "DELETE", f"/v1/contacts/forum/{run}") == 403
        person = {"source": "crm", "external_id": run, "name": "Bo Lind"}
        assert _status(ingest, "POST", "/v1/contacts", json=person) == 403  # erase only


def test_two_active_keys_per_name_rotate_without_downtime(secure: Stack) -> None:
    name = f"rot{run_id()}"
    first = _create_key(secure, name, "--source", "crm")
    second = _roac(secure, "keys", "rotate", name)
    assert second.returncode == 0, second.stderr
    second_key = second.stdout.strip()
    third = _roac(secure, "keys", "create", name)
    assert third.returncode == 1 and "two active keys" in third.stderr
    person = {"source": "crm", "external_id": "rot", "name": "Cy Rot"}
    with _client(secure.ingest_url, first) as old, _client(secure.ingest_url, second_key) as new:
        eventually(lambda: _status(new, "POST", "/v1/contacts", json=person) == 202)
        assert _status(old, "POST", "/v1/contacts", json=person) == 202
        revoked = _roac(secure, "keys", "revoke", name, "--oldest")
        assert revoked.returncode == 0, revoked.stderr
        eventually(lambda: _status(old, "POST", "/v1/contacts", json=person) == 401)
        assert _status(new, "POST", "/v1/contacts", json=person) == 202
    listed = _roac(secure, "keys", "list").stdout
    assert re.search(rf"^{name}\s+events:write\s+crm\s", listed, re.MULTILINE)


def test_a_keys_admin_key_manages_keys_over_http(secure: Stack) -> None:
    run = run_id()
    admin = _create_key(secure, f"admin{run}", "--scope", "keys:admin")
    with _client(secure.ingest_url, admin) as ingest:
        eventually(lambda: _status(ingest, "GET", "/v1/keys") == 200)
        body = {"name": f"forms{run}", "scopes": ["events:write"], "sources": ["forms"]}
        created = ingest.post("/v1/keys", json=body)
        assert created.status_code == 201, created.text
        listed = {k["name"]: k for k in ingest.get("/v1/keys").json()["keys"]}
        assert listed[f"forms{run}"]["sources"] == ["forms"]
        assert "secret" not in listed[f"forms{run}"]
        assert ingest.post("/v1/keys", json={**body, "scopes": ["events:rite"]}).status_code == 422
        assert ingest.delete(f"/v1/keys/forms{run}").json() == {"revoked": 1}


def _ask_link(stack: Stack, email: str) -> str:
    [ask] = stack.sink.wait_for(email, within=15)
    found = re.search(r"Yes, introduce me:\s+(\S+)", ask.text)
    assert found, ask.text
    return found[1]


def _pair(stack: Stack, topic: str) -> list[dict[str, Any]]:
    run = run_id()
    people = [new_person(run, i) for i in range(2)]
    with stack.client() as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        for person in people:
            interest = {
                "source": "e2e",
                "external_id": person["external_id"],
                "topic": f"{topic} {run}",
                "kind": "likes",
            }
            assert client.post("/v1/interests", json=interest).status_code == 202
    return people


def test_links_live_on_the_public_port_and_nothing_else_does(secure: Stack) -> None:
    people = _pair(secure, "public pages")
    accept = _ask_link(secure, people[0]["email"])
    public = secure.env["ROAC_PUBLIC_URL"]
    assert accept.startswith(f"{public}/links/t1.")
    token = accept.rsplit("/", 1)[1]
    assert people[0]["external_id"] not in base64.urlsafe_b64decode(
        token.split(".")[1] + "=="
    ).decode("latin-1")
    assert httpx.get(accept).status_code == 200
    assert httpx.get(f"{public}/healthz").status_code == 200
    for path in ("/metrics", "/docs", "/openapi.json", "/readyz", "/v1/intros"):
        assert (
            httpx.get(f"{public}{path}", headers={"Authorization": f"Bearer {API_KEY}"}).status_code
            == 404
        ), path
    assert httpx.get(f"{secure.notifier_url}/links/{token}").status_code == 404
    assert httpx.get(f"{secure.notifier_url}/metrics").status_code == 200


def test_a_webhook_receiver_cannot_mint_a_link_with_its_own_secret(secure: Stack) -> None:
    """A receiver holds its destination's `whsec_` secret: whatever it signs with it, in either
    link format, is refused, and the secret is not the link key."""
    receiver_secret = destination_secret(
        WEBHOOK_SIGNING_KEY.encode(), "https://hooks.example.org/roac"
    )
    assert receiver_secret.startswith("whsec_")
    raw = base64.b64decode(receiver_secret.removeprefix("whsec_"))
    assert LINK_KEY.encode() not in (raw, receiver_secret.encode())
    people = _pair(secure, "forgery")
    genuine = _ask_link(secure, people[0]["email"])
    public = secure.env["ROAC_PUBLIC_URL"]
    claim = LinkClaim(
        LinkAction.UNSUBSCRIBE, "e2e", people[1]["external_id"], int(time.time()) + 3600
    )
    for key in (raw, receiver_secret.encode()):
        forged = [
            LinkKeyring.single(key, key_id="t1").sign(claim),
            sign_legacy(claim, key),
            # The old webhook scheme's HMAC over a payload, under the receiver's secret.
            genuine.rsplit("/", 1)[1].split(".")[0]
            + "."
            + base64.urlsafe_b64encode(hmac.new(key, b"x", hashlib.sha256).digest()[:16])
            .decode()
            .rstrip("="),
        ]
        for token in forged:
            response = httpx.post(f"{public}/links/{token}")
            assert response.status_code == 400, (token, response.status_code)
    assert httpx.get(genuine).status_code == 200


def _notifier_with(stack: Stack, link_keys: str, label: str) -> ServiceProcess:
    """Another notifier process of the stack, with its own link key ring."""
    return ServiceProcess(
        "notifier",
        {**stack.env, "ROAC_LINK_KEYS": link_keys},
        stack.notifier.ready_url,
        stack.notifier.log_path.parent,
        label=label,
    )


def test_a_rotated_link_key_verifies_old_links_and_signs_new_ones(secure: Stack) -> None:
    people = _pair(secure, "rotation")
    old_link = _ask_link(secure, people[0]["email"])
    assert "/links/t1." in old_link
    new_key = new_secret()
    secure.notifier.stop()
    rotated = _notifier_with(secure, f"t2:{new_key},t1:{LINK_KEY}", "notifier-rotated")
    rotated.start()
    try:
        assert "Thank you" in httpx.post(old_link).text  # sent before the rotation, still works
        later = _pair(secure, "after rotation")
        assert "/links/t2." in _ask_link(secure, later[0]["email"])
        # Dropping the old key retires its links.
        rotated.stop()
        retired = _notifier_with(secure, f"t2:{new_key}", "notifier-retired")
        retired.start()
        try:
            assert httpx.post(old_link).status_code == 400
        finally:
            retired.stop()
    finally:
        rotated.stop()
        secure.notifier.start()


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        *[("notifier", "ROAC_LINK_KEYS", f"k1:{p}") for p in sorted(KNOWN_PLACEHOLDERS)],
        ("notifier", "ROAC_LINK_KEYS", "k1:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("notifier", "ROAC_SECRET_KEY", "compose-development-secret-change-me-0123456789"),
        ("ingest", "ROAC_API_KEYS", "compose:compose-development-key-change-me"),
        ("ingest", "ROAC_API_KEYS", "crm:replace-with-a-long-random-secret"),
        ("matcher", "ROAC_API_KEYS", "crm:Tr0ub4dor&3Tr0ub4dor&3Tr0ub4dor&3xx"),
        ("notifier", "ROAC_WEBHOOK_SIGNING_KEY", "replace-with-at-least-32-random-characters"),
    ],
)
def test_a_placeholder_or_low_entropy_secret_refuses_to_start(
    secure: Stack, service: str, variable: str, value: str
) -> None:
    started = _roac(secure, service, env={variable: value})
    assert started.returncode == 2, started.stderr[-2000:]
    assert variable in started.stderr and "roac secrets generate" in started.stderr
    secret_part = value.split(":", 1)[-1]
    assert secret_part not in started.stderr  # a refused secret is never echoed


def test_the_notifier_refuses_to_start_without_link_keys(secure: Stack) -> None:
    env = {k: v for k, v in secure.env.items() if k != "ROAC_LINK_KEYS"}
    started = subprocess.run(
        [sys.executable, "-m", "services.cli", "notifier"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "ROAC_LINK_KEYS must be set" in started.stderr


def test_a_refused_key_is_answered_401_even_to_a_client_that_writes_its_whole_body(
    secure: Stack,
) -> None:
    """urllib writes the whole body before it reads the answer: the 401 must reach it."""
    body = json.dumps({"items": [{"source": "crm", "external_id": str(i)} for i in range(20_000)]})
    assert 400_000 < len(body) < 1024 * 1024
    request = urllib.request.Request(  # noqa: S310 - a local test server
        f"{secure.ingest_url}/v1/contacts",
        data=body.encode(),
        headers={"Authorization": "Bearer not-a-key", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310 - a local test server
    assert refused.value.code == 401
