"""API keys managed with the real `roac keys` CLI, used against the live ingest process: a new
key is accepted without a restart, its events are counted under its name, and once revoked it
is refused within the documented time (ROAC_API_KEYS_REFRESH_SECONDS, 5 s by default)."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from shared.settings import Settings
from tests.e2e.conftest import Stack, new_person, run_id
from tests.support.processes import run_roac

pytestmark = pytest.mark.e2e

# The documented bound: the periodic reload. NOTIFY makes it milliseconds in practice.
REVOCATION_BOUND_SECONDS = Settings.model_fields["api_keys_refresh_seconds"].default + 1.0


def roac(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return run_roac(stack.env, *args)


def status_within(
    client: httpx.Client, secret: str, wanted: int, within: float
) -> tuple[int, float]:
    """Post until ingest answers `wanted` for this key; the last status and the time it took.
    An empty body is authenticated first and then refused (422), so nothing is published."""
    started = time.monotonic()
    while True:
        status = client.post(
            "/v1/contacts", json={}, headers={"Authorization": f"Bearer {secret}"}
        ).status_code
        elapsed = time.monotonic() - started
        if status == wanted or elapsed > within:
            return status, elapsed
        time.sleep(0.05)


def test_a_key_created_with_the_cli_works_until_it_is_revoked(stack: Stack) -> None:
    name = f"e2e-{run_id()}"
    created = roac(stack, "keys", "create", name, "--source", "e2e")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()

    with httpx.Client(base_url=stack.ingest_url, timeout=30) as client:
        status, _ = status_within(client, secret, 422, REVOCATION_BOUND_SECONDS)
        assert status == 422  # authenticated, then the empty body refused
        accepted = client.post(
            "/v1/contacts",
            json=new_person(run_id(), 1),
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert accepted.status_code == 202, accepted.text

        metrics = client.get("/metrics").text
        assert (
            "roac_ingest_events_accepted_total"
            f'{{integration="{name}",type="contact.upserted.v1"}} 1.0'
        ) in metrics

        revoked = roac(stack, "keys", "revoke", name)
        assert revoked.returncode == 0, revoked.stderr
        status, elapsed = status_within(client, secret, 401, REVOCATION_BOUND_SECONDS)
        assert status == 401, f"still accepted {elapsed:.1f}s after the revocation"
        assert elapsed <= REVOCATION_BOUND_SECONDS

        # The environment's key is untouched by any of this.
        with stack.client() as env_client:
            assert env_client.post("/v1/contacts", json={}).status_code == 422

    listed = roac(stack, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert secret not in listed.stdout
    (line,) = [ln for ln in listed.stdout.splitlines() if ln.startswith(name)]
    _, _scopes, _sources, _, _, last_used_day, _, revoked_day, _ = line.split()
    assert last_used_day != "-"  # flushed by the reload the revocation caused
    assert revoked_day != "-"


def test_every_service_counts_each_keys_use_and_refusals_by_name(stack: Stack) -> None:
    # The matcher and the notifier check keys too: their use shows under the key's name there.
    name = f"reader-{run_id()}"
    created = roac(stack, "keys", "create", name, "--scope", "intros:read", "--source", "e2e")
    assert created.returncode == 0, created.stderr
    headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
    for base, path, expected in (
        (stack.notifier_url, "/v1/intros", 200),
        (stack.notifier_url, "/v1/resources/deliveries", 403),  # resources:read
        (stack.matcher_url, "/v1/rounds", 403),  # rounds:read
    ):
        deadline = time.monotonic() + REVOCATION_BOUND_SECONDS
        while (status := httpx.get(f"{base}{path}", headers=headers).status_code) == 401:
            assert time.monotonic() < deadline, f"{base} never saw the key"
            time.sleep(0.1)
        assert status == expected, (base, path, status)
    for base in (stack.matcher_url, stack.notifier_url):
        metrics = httpx.get(f"{base}/metrics").text
        assert f'roac_api_key_requests_total{{key="{name}"}}' in metrics, base
        assert f'roac_api_key_refusals_total{{key="{name}",' in metrics, base
