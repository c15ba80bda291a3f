"""A round's dry run against a live matcher, and what it says about one person: the helpers
end-to-end tests use to see whom a round would leave out, and why."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.infra import API_KEY
from tests.support.waiting import eventually


def dry_run(matcher_url: str, pool: str) -> dict[str, Any]:
    """Plan a round of `pool` without proposing anything, and wait for its plan."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=matcher_url, headers=headers, timeout=15) as matcher:
        requested = matcher.post("/v1/rounds", json={"pool": pool, "dry_run": True})
        assert requested.status_code == 202, requested.text

        def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = matcher.get(requested.headers["Location"]).json()
            return body if body["status"] in ("done", "failed") else None

        done: dict[str, Any] = eventually(finished)
    assert done["status"] == "done", done
    return done


def left_out(plan: dict[str, Any], external_id: str) -> str | None:
    """Why the round leaves this person out (its sample of those left out), or None."""
    for person in plan["stats"].get("unplaced_sample", []):
        if person["external_id"] == external_id:
            reason: str = person["reason"]
            return reason
    return None
