"""A person's right of access (GDPR Art. 15): everything roac holds about one person, gathered
from the services that hold it, as one JSON document (`GET /v1/contacts/{source}/{id}` on ingest).

Ingest owns no person data; the matcher holds the profile, identities, interests, preferences
and block list, the notifier the introductions and each participant's answer. Both are asked
over their HTTP APIs with the caller's own API key, so the answer is exactly what that key may
read in each service (no key of ingest's own widens it): `contacts:read` for the person's source
at the matcher, `intros:read` at the notifier.

What the document shows of other people: an introduction names the others only once it was
made (they were told each other's names then); before that, or when someone declined, it says
how many others there were and nothing about them, since that is their data, not the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from shared.events import ContactRef

# The notifier's page size (its maximum) and how many introductions the answer holds at most.
INTROS_PAGE = 200
MAX_INTROS = 2_000
# States in which everyone said yes, so they are told each other's names (the notifier's
# IntroState in services/notifier/optin.py: `accepted` is being delivered, `introduced` was).
INTRODUCED_STATES = frozenset({"accepted", "introduced"})


class AccessUnavailable(Exception):
    """A service holding part of the answer could not be asked: a partial answer to a right of
    access is a wrong one, so the caller gets a 503 and retries."""


@dataclass(frozen=True)
class Refused(Exception):
    """A service refused the caller's key (401, 403) or knows nobody by that id (404): its
    problem document is passed on as it is."""

    status: int
    problem: dict[str, Any]


@dataclass(frozen=True)
class ServiceUrls:
    matcher: str
    notifier: str


def _person_path(person: ContactRef) -> str:
    return f"/v1/contacts/{quote(person.source, safe='')}/{quote(person.external_id, safe='')}"


class PersonAccess:
    """Gathers one person's record from the matcher and the notifier."""

    def __init__(self, client: httpx.AsyncClient, urls: ServiceUrls) -> None:
        self._client = client
        self._urls = urls

    async def record(self, person: ContactRef, authorization: str) -> dict[str, Any]:
        held = await self._get(self._urls.matcher, _person_path(person), authorization)
        seen: dict[str, dict[str, Any]] = {}
        # The notifier seats each introduction under the identity it was proposed for: ask for
        # every identity of the person (merges included).
        for identity in held.get("identities") or [person.model_dump()]:
            ref = ContactRef(source=identity["source"], external_id=identity["external_id"])
            for intro in await self._intros(ref, authorization):
                seen.setdefault(str(intro["id"]), intro)
        identities = {(i["source"], i["external_id"]) for i in held.get("identities", [])}
        intros = sorted(
            seen.values(), key=lambda i: (str(i["created_at"]), str(i["id"])), reverse=True
        )
        truncated = {**held.get("truncated", {}), "introductions": len(intros) > MAX_INTROS}
        return {
            "person": {"source": person.source, "external_id": person.external_id},
            "collected_at": datetime.now(UTC).isoformat(),
            **held,
            "introductions": [_as_seen_by(i, identities) for i in intros[:MAX_INTROS]],
            "truncated": truncated,
        }

    async def _intros(self, person: ContactRef, authorization: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        before: tuple[str, str] | None = None
        while len(found) <= MAX_INTROS:  # one more than shown: whether there were more
            params: dict[str, str | int] = {"limit": INTROS_PAGE}
            if before is not None:
                params["before"], params["before_id"] = before
            page = await self._get(
                self._urls.notifier, _person_path(person) + "/intros", authorization, params
            )
            intros: list[dict[str, Any]] = page.get("intros", [])
            found.extend(intros)
            if len(intros) < INTROS_PAGE:
                break
            # Keyset (created_at, id): introductions made in one transaction share the instant.
            before = (str(intros[-1]["created_at"]), str(intros[-1]["id"]))
        return found

    async def _get(
        self,
        base: str,
        path: str,
        authorization: str,
        params: dict[str, str | int] | None = None,
    ) -> dict[str, Any]:
        try:
            answer = await self._client.get(
                base.rstrip("/") + path, params=params, headers={"Authorization": authorization}
            )
        except httpx.HTTPError as exc:
            raise AccessUnavailable(f"{base} did not answer ({type(exc).__name__})") from exc
        if answer.status_code in (401, 403, 404):
            raise Refused(answer.status_code, _problem(answer))
        if answer.status_code != 200:
            raise AccessUnavailable(f"{base} answered {answer.status_code}")
        body: dict[str, Any] = answer.json()
        return body


def _problem(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"title": answer.reason_phrase, "status": answer.status_code}


def _as_seen_by(intro: dict[str, Any], identities: set[tuple[str, str]]) -> dict[str, Any]:
    """One introduction as the person may see it: their own seat and answer in full; the others
    by name only once they were introduced to each other."""
    seats = intro.get("participants") or []
    own = [s for s in seats if (s.get("source"), s.get("external_id")) in identities]
    others = [s for s in seats if s not in own]
    introduced = intro.get("state") in INTRODUCED_STATES
    return {
        "id": intro["id"],
        "state": intro.get("state"),
        "reason": intro.get("reason"),
        "topics": intro.get("topics") or [],
        "round": intro.get("round"),
        "created_at": intro.get("created_at"),
        "updated_at": intro.get("updated_at"),
        "answer": own[0].get("answer") if own else None,
        "answered_at": own[0].get("answered_at") if own else None,
        "others": len(others),
        "introduced_to": [s.get("name") for s in others] if introduced else [],
    }
