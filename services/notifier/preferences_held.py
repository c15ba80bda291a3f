"""What roac holds about a person that the preferences page shows but the notifier does not
own: their channels and their interests, read back from the matcher over its HTTP contract
(`GET /v1/contacts/{source}/{external_id}`, scope `contacts:read`).

Why an HTTP read and not a projection of the notifier's own: the interests arrive on the
busiest stream roac has (ingest's interest events, tens of thousands a second on an import),
and the matcher already resolves them to the person across merged identities. Projecting that
stream into the notifier would double its writes and put every bulk import in front of the
introductions on the notifier's queue, for a page a few people open. The read is bounded by a
short timeout; when the matcher cannot answer (or no key is configured) the page says so and
everything else on it works.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from services.notifier.preferences_interests import HeldInterest
from shared.events import ChannelAddress, ChannelType, InterestKind
from shared.settings import Settings

log = logging.getLogger("roac.notifier")

READ_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Held:
    """The person's channels, in the integration's order, and interests, as the matcher holds
    them."""

    channels: list[ChannelAddress]
    interests: list[HeldInterest]

    @property
    def channel_types(self) -> list[ChannelType]:
        return list(dict.fromkeys(c.type for c in self.channels))


def held_from(body: dict[str, Any]) -> Held:
    """The matcher's answer as the page needs it (what this notifier does not know is left
    out: a channel type or interest kind of a newer matcher)."""
    channels = [
        ChannelAddress.model_construct(type=ChannelType(c["type"]), address=str(c["address"]))
        for c in body.get("channels") or []
        if c.get("type") in ChannelType.__members__.values()
    ]
    interests = [
        HeldInterest(
            str(i["topic"]),
            InterestKind(i["kind"]),
            datetime.fromisoformat(i["declared_at"]) if i.get("declared_at") else None,
        )
        for i in body.get("interests") or []
        if i.get("kind") in InterestKind.__members__.values()
    ]
    return Held(channels, interests)


class MatcherReadBack:
    """Reads a person's record from the matcher with the notifier's own scoped key
    (ROAC_NOTIFIER_MATCHER_API_KEY, at ROAC_MATCHER_URL)."""

    def __init__(
        self, base_url: str, api_key: str, client: httpx.AsyncClient | None = None
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> MatcherReadBack:
        return cls(
            settings.service_api_urls["matcher"],
            settings.notifier_matcher_api_key.get_secret_value(),
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def held(self, source: str, external_id: str) -> Held | None:
        """Their channels and interests; None when not configured, unknown to the matcher, or
        the matcher does not answer in time."""
        if not self._api_key or not self._base_url:
            return None
        if self._client is None:  # made in the running event loop, on first use
            self._client = httpx.AsyncClient(timeout=READ_TIMEOUT_SECONDS)
        path = f"/v1/contacts/{quote(source, safe='')}/{quote(external_id, safe='')}"
        try:
            response = await self._client.get(
                self._base_url + path,
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=READ_TIMEOUT_SECONDS,
            )
        except httpx.HTTPError as exc:
            log.warning("preferences page: the matcher did not answer (%s)", type(exc).__name__)
            return None
        if response.status_code != 200:
            if response.status_code != 404:
                log.warning("preferences page: the matcher answered %s", response.status_code)
            return None
        try:
            return held_from(response.json())
        except (ValueError, KeyError, TypeError):
            log.warning("preferences page: the matcher's answer could not be read")
            return None
