"""The console's clients of the three services' APIs: every page's data comes through them, with
the console's one API key (ROAC_CONSOLE_API_KEY), so the console meets the services only
through their documented contracts (docs/openapi/).

Each call is one small request with a timeout; a service that answers with a problem document
raises ApiError with its status and detail (shown on the page), one that does not answer raises
ApiError with status 502."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx

TIMEOUT_SECONDS = 10.0


class ApiError(Exception):
    def __init__(self, service: str, status: int, detail: str) -> None:
        super().__init__(f"{service}: {status} {detail}")
        self.service = service
        self.status = status
        self.detail = detail


def person_path(source: str, external_id: str) -> str:
    # An id may hold a slash: it travels encoded (the services' routes take it as
    # `:person_id`, shared/person_path.py).
    return f"/v1/contacts/{quote(source, safe='')}/{quote(external_id, safe='')}"


class ServiceClient:
    def __init__(self, service: str, base_url: str, api_key: str) -> None:
        self.service = service
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=TIMEOUT_SECONDS,
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        correlation_id: str | None = None,
    ) -> Any:
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        headers = {"X-Correlation-Id": correlation_id} if correlation_id else {}
        try:
            response = await self._http.request(
                method, path, params=query, json=json, headers=headers
            )
        except httpx.HTTPError as exc:
            raise ApiError(self.service, 502, f"not reachable ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            raise ApiError(self.service, response.status_code, _detail(response))
        return response.json() if response.content else None

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def close(self) -> None:
        await self._http.aclose()


def _param(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):
            return "; ".join(
                str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in detail
            )
    return response.reason_phrase


class Apis:
    """One method per call the console makes, named after what it asks."""

    def __init__(self, urls: dict[str, str], api_key: str) -> None:
        self.ingest = ServiceClient("ingest", urls["ingest"], api_key)
        self.matcher = ServiceClient("matcher", urls["matcher"], api_key)
        self.notifier = ServiceClient("notifier", urls["notifier"], api_key)

    async def close(self) -> None:
        for client in (self.ingest, self.matcher, self.notifier):
            await client.close()

    # matcher: pools and rounds

    async def pools(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.matcher.call("GET", "/v1/pools"))["pools"]
        return found

    async def save_pool(self, pool: dict[str, Any]) -> dict[str, Any]:
        saved: dict[str, Any] = await self.matcher.call("POST", "/v1/pools", json=pool)
        return saved

    async def preview_pool(self, selector: dict[str, Any]) -> int:
        answer = await self.matcher.call("POST", "/v1/pools/preview", json=selector)
        return int(answer["people"])

    async def rounds(self, pool: str | None, before: str | None, limit: int = 25) -> dict[str, Any]:
        page: dict[str, Any] = await self.matcher.call(
            "GET", "/v1/rounds", params={"pool": pool, "before": before, "limit": limit}
        )
        return page

    async def rounds_since(self, since: datetime, pages: int = 5) -> list[dict[str, Any]]:
        """Rounds of every pool requested since `since`, newest first (at most `pages` pages
        of 200: the Today page's charts need only which pool each round was of)."""
        found: list[dict[str, Any]] = []
        before = None
        for _ in range(pages):
            page = await self.rounds(None, before, limit=200)
            found += page["rounds"]
            before = page.get("next_before")
            if not before or datetime.fromisoformat(before) < since:
                break
        return found

    async def request_round(self, pool: str, dry_run: bool, correlation_id: str) -> dict[str, Any]:
        started: dict[str, Any] = await self.matcher.call(
            "POST",
            "/v1/rounds",
            json={"pool": pool, "dry_run": dry_run},
            correlation_id=correlation_id,
        )
        return started

    async def round(self, round_id: UUID, groups_from: int, groups: int) -> dict[str, Any]:
        """The round with `groups` of its planned groups from `groups_from` (a dry run)."""
        found: dict[str, Any] = await self.matcher.call(
            "GET",
            f"/v1/rounds/{round_id}",
            params={"plan_offset": groups_from, "plan_limit": groups},
        )
        return found

    # matcher: resources

    async def preview_resource(
        self, topics: list[str], url: str | None, offset: int, limit: int
    ) -> dict[str, Any]:
        found: dict[str, Any] = await self.matcher.call(
            "POST",
            "/v1/resources/preview",
            json={"topics": topics, "url": url or None, "offset": offset, "limit": limit},
        )
        return found

    async def share_resource(
        self, url: str, title: str, topics: list[str], limit: int, correlation_id: str
    ) -> dict[str, Any]:
        shared: dict[str, Any] = await self.matcher.call(
            "POST",
            "/v1/resources",
            json={"url": url, "title": title, "topics": topics, "limit": limit},
            correlation_id=correlation_id,
        )
        return shared

    async def resource(self, resource_id: UUID) -> dict[str, Any]:
        found: dict[str, Any] = await self.matcher.call("GET", f"/v1/resources/{resource_id}")
        return found

    # matcher: people

    async def search_people(self, query: str, after: str | None, limit: int = 25) -> dict[str, Any]:
        page: dict[str, Any] = await self.matcher.call(
            "GET", "/v1/contacts", params={"q": query, "after": after, "limit": limit}
        )
        return page

    async def profile(self, source: str, external_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.matcher.call(
            "GET", person_path(source, external_id) + "/profile"
        )
        return found

    async def identity(self, source: str, external_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.matcher.call(
            "GET", person_path(source, external_id) + "/identity"
        )
        return found

    # matcher: an operator's corrections to a person

    async def block_pair(
        self, source: str, external_id: str, other: tuple[str, str], correlation_id: str
    ) -> dict[str, Any]:
        blocked: dict[str, Any] = await self.matcher.call(
            "POST",
            person_path(source, external_id) + "/blocks",
            json={"source": other[0], "external_id": other[1]},
            correlation_id=correlation_id,
        )
        return blocked

    async def unmerge(
        self, source: str, external_id: str, merge_id: UUID, correlation_id: str
    ) -> dict[str, Any]:
        undone: dict[str, Any] = await self.matcher.call(
            "POST",
            person_path(source, external_id) + "/unmerge",
            json={"merge_id": str(merge_id)},
            correlation_id=correlation_id,
        )
        return undone

    # notifier

    async def intros(
        self, round_id: UUID | None = None, state: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        answer = await self.notifier.call(
            "GET", "/v1/intros", params={"round": round_id, "state": state, "limit": limit}
        )
        found: list[dict[str, Any]] = answer["intros"]
        return found

    async def weekly(self, weeks: int = 12) -> dict[str, list[dict[str, Any]]]:
        """The weeks' counts (`weeks`) and the same per round (`rounds`)."""
        found: dict[str, list[dict[str, Any]]] = await self.notifier.call(
            "GET", "/v1/intros/weekly", params={"weeks": weeks, "by_round": True}
        )
        return found

    async def person_intros(self, source: str, external_id: str) -> list[dict[str, Any]]:
        answer = await self.notifier.call("GET", person_path(source, external_id) + "/intros")
        found: list[dict[str, Any]] = answer["intros"]
        return found

    async def deliveries(self, status: str, before: str | None, limit: int = 50) -> dict[str, Any]:
        page: dict[str, Any] = await self.notifier.call(
            "GET", "/v1/deliveries", params={"status": status, "before": before, "limit": limit}
        )
        return page

    async def resource_deliveries(
        self, resource_id: UUID, limit: int = 500
    ) -> list[dict[str, Any]]:
        answer = await self.notifier.call(
            "GET", "/v1/resources/deliveries", params={"resource": resource_id, "limit": limit}
        )
        found: list[dict[str, Any]] = answer["deliveries"]
        return found

    async def retry_deliveries(
        self, delivery_ids: list[UUID] | None, correlation_id: str
    ) -> list[str]:
        answer = await self.notifier.call(
            "POST",
            "/v1/deliveries/retry",
            json={"deliveries": [str(d) for d in delivery_ids] if delivery_ids else None},
            correlation_id=correlation_id,
        )
        retried: list[str] = answer["retried"]
        return retried

    # ingest: actions on a person

    async def change_preferences(
        self, source: str, external_id: str, changes: dict[str, Any], correlation_id: str
    ) -> None:
        """Set preferences on the person's behalf (`paused_until`, caps, language): held as
        their own choice, which the integration's later upserts do not undo."""
        await self.ingest.call(
            "POST",
            person_path(source, external_id) + "/preferences",
            json=changes,
            correlation_id=correlation_id,
        )

    async def opt_out(self, source: str, external_id: str, correlation_id: str) -> None:
        await self.ingest.call(
            "POST", person_path(source, external_id) + "/opt-out", correlation_id=correlation_id
        )

    async def erase(self, source: str, external_id: str, correlation_id: str) -> None:
        await self.ingest.call(
            "DELETE", person_path(source, external_id), correlation_id=correlation_id
        )
