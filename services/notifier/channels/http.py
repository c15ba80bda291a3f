"""Chat and webhook channels over HTTP (aiohttp): Slack, Mattermost, Discord, Teams, Matrix and
roac's generic signed JSON webhook (Standard Webhooks, channels/webhook_signing.py). aiohttp
rather than httpx here: measured against the same local receiver, httpx's connection pool topped
out near 300 requests/s at 64 concurrent sends, aiohttp passed 7,000.

Each request is checked the way the provider answers: 2xx is sent; 408, 425, 429 and 5xx are
transient (with Retry-After, or the provider's own retry field, honoured); any other status is
permanent. A contact's URL cannot make roac call something internal: webhook hosts must be on
ROAC_WEBHOOK_ALLOWED_HOSTS, redirects are not followed, and every request goes through the
guarded session of channels/outbound.py (HTTPS only, no private, loopback or metadata address,
checked at connect time, response bodies capped); a refused destination is a permanent failure.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

from services.notifier.channels import slack_blocks, webhook_signing
from services.notifier.channels.base import Outgoing, Sent
from services.notifier.channels.outbound import (
    OutboundPolicy,
    RefusedDestination,
    read_capped,
    session_policy,
)
from services.notifier.delivery_policy import (
    PermanentDeliveryError,
    TransientDeliveryError,
    destination_allowed,
)
from services.notifier.rendering import Style, escape
from services.notifier.retry_policy import http_status_is_transient, parse_retry_after
from shared.events import ChannelType

DISCORD_MAX_CHARS = 2000
SLACK_TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def _body_retry_after(answer: HttpAnswer) -> float | None:
    """Discord says `retry_after` (seconds), Matrix `retry_after_ms`, in the JSON body."""
    try:
        data = answer.json()
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("retry_after"), int | float):
        return float(data["retry_after"])
    if isinstance(data.get("retry_after_ms"), int | float):
        return float(data["retry_after_ms"]) / 1000
    return None


def check_response(answer: HttpAnswer) -> None:
    status = answer.status
    if 200 <= status < 300:
        return
    if http_status_is_transient(status):
        retry_after = parse_retry_after(answer.headers.get("retry-after"), datetime.now(UTC))
        if retry_after is None:
            retry_after = _body_retry_after(answer)
        raise TransientDeliveryError(f"HTTP {status}", retry_after)
    raise PermanentDeliveryError(f"HTTP {status}: {answer.text[:200]}")


def _requestable(url: str) -> None:
    """Raise the ValueError aiohttp would meet building the request (an empty or overlong host
    label fails the IDNA codec), before any connection is tried."""
    host = urlsplit(url).hostname
    if host:
        host.encode("idna")


async def _request(
    session: aiohttp.ClientSession,
    policy: OutboundPolicy,
    method: str,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
) -> HttpAnswer:
    """One request through the guarded session; a refused destination, or a URL no client can
    request, is permanent."""
    try:
        policy.check_url(url)
        _requestable(url)
    except RefusedDestination as exc:
        raise PermanentDeliveryError(f"destination refused: {exc}") from exc
    except ValueError as exc:
        # Before any connection: yarl or the IDNA codec refusing the URL (UnicodeError too), an
        # address stored before ingest checked URLs this strictly. Its text is the person's
        # address: only the error's type is kept.
        raise PermanentDeliveryError(f"invalid URL: {type(exc).__name__}") from exc
    try:
        async with session.request(
            method, url, data=body, headers=dict(headers), allow_redirects=False
        ) as response:
            return HttpAnswer(response.status, response.headers, await read_capped(response))
    except RefusedDestination as exc:
        raise PermanentDeliveryError(f"destination refused: {exc}") from exc
    except TimeoutError as exc:
        raise TransientDeliveryError("HTTP timeout") from exc
    except aiohttp.ClientConnectorError as exc:
        # The guarded resolver's refusal reaches us wrapped by aiohttp's connector.
        if isinstance(exc.os_error, RefusedDestination):
            raise PermanentDeliveryError(f"destination refused: {exc.os_error}") from exc
        raise TransientDeliveryError(f"HTTP unreachable: {type(exc).__name__}") from exc
    except aiohttp.InvalidURL as exc:
        # What aiohttp itself refuses to request (a port out of range): sending again cannot
        # help.
        raise PermanentDeliveryError(f"invalid URL: {type(exc).__name__}") from exc
    except aiohttp.ClientError as exc:
        raise TransientDeliveryError(f"HTTP unreachable: {type(exc).__name__}") from exc


def _json_body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _with_query(url: str, extra: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


class WebhookChannel:
    """Incoming webhooks: Slack, Mattermost, Discord, Teams workflows, and the generic one."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        channel: ChannelType,
        allowed_hosts: tuple[str, ...],
        signing_key: bytes = b"",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._policy = session_policy(session)
        self._channel = channel
        self._allowed = allowed_hosts
        # ROAC_WEBHOOK_SIGNING_KEY: each destination's secret is derived from it, per URL.
        self._signing_key = signing_key
        self._wall_clock = wall_clock

    def rate_key(self, out: Outgoing) -> str | None:
        return f"{self._channel.value}:{out.address}"

    def _request_for(self, out: Outgoing) -> tuple[str, dict[str, Any]]:
        chat = out.rendered.chat
        match self._channel:
            case ChannelType.SLACK_WEBHOOK:
                return out.address, {"text": chat[Style.SLACK], "unfurl_links": False}
            case ChannelType.MATTERMOST:
                return out.address, {"text": chat[Style.MARKDOWN]}
            case ChannelType.DISCORD:
                # wait=true: Discord answers with the created message instead of 204.
                return _with_query(out.address, "wait=true"), {
                    "content": chat[Style.MARKDOWN][:DISCORD_MAX_CHARS],
                    "allowed_mentions": {"parse": []},
                }
            case ChannelType.TEAMS:
                card = {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            # The subject holds names: escaped like the message's Markdown.
                            "text": escape(Style.MARKDOWN, out.rendered.subject),
                            "weight": "Bolder",
                            "wrap": True,
                        },
                        {"type": "TextBlock", "text": chat[Style.MARKDOWN], "wrap": True},
                    ],
                }
                return out.address, {
                    "type": "message",
                    "attachments": [
                        {
                            "contentType": "application/vnd.microsoft.card.adaptive",
                            "contentUrl": None,
                            "content": card,
                        }
                    ],
                }
            case _:
                return out.address, out.payload

    async def send(self, out: Outgoing) -> Sent:
        if not destination_allowed(out.address, self._allowed):
            raise PermanentDeliveryError(
                f"{self._channel.value} host not in ROAC_WEBHOOK_ALLOWED_HOSTS"
            )
        url, payload = self._request_for(out)
        body = _json_body(payload)
        headers = {"Content-Type": "application/json", "User-Agent": "roac-notifier"}
        if self._channel is ChannelType.WEBHOOK:
            headers |= self._signed_headers(out, body)
        response = await _request(
            self._session, self._policy, "POST", url, body=body, headers=headers
        )
        check_response(response)
        hold_for = None
        if (
            self._channel is ChannelType.DISCORD
            and response.headers.get("x-ratelimit-remaining") == "0"
        ):
            try:
                hold_for = float(response.headers.get("x-ratelimit-reset-after", "1"))
            except ValueError:
                hold_for = 1.0
        provider_id = str(out.delivery_id)
        if self._channel is ChannelType.DISCORD:
            with contextlib.suppress(ValueError, AttributeError):
                provider_id = str(response.json().get("id", provider_id))
        return Sent(provider_id=provider_id, hold_for=hold_for)

    def _signed_headers(self, out: Outgoing, body: bytes) -> dict[str, str]:
        """Standard Webhooks headers under this destination's own secret. `webhook-id` is the
        delivery's idempotency key (stable per delivery and channel): a resend after a crash
        carries the same id, so the receiver can drop the repeat."""
        if not self._signing_key:
            raise PermanentDeliveryError(
                "generic webhook not sent: no ROAC_WEBHOOK_SIGNING_KEY to sign it with"
            )
        try:
            key = webhook_signing.destination_key(self._signing_key, out.address)
        except ValueError as exc:
            raise PermanentDeliveryError(f"generic webhook: {exc}") from exc
        timestamp = int(self._wall_clock())
        return webhook_signing.signed_headers(key, out.idempotency_key, timestamp, body)


class SlackAppChannel:
    """Slack app mode: the bot opens a DM (or a group DM with every participant) and posts.
    With `buttons` (ROAC_SLACK_SIGNING_SECRET set, so clicks can be verified), an ask carries
    Block Kit buttons (channels/slack_blocks.py) beside its text."""

    def __init__(
        self, session: aiohttp.ClientSession, api_url: str, token: str, *, buttons: bool = False
    ) -> None:
        self._session = session
        self._policy = session_policy(session)
        self._api = api_url.rstrip("/")
        self._token = token
        self._buttons = buttons

    def rate_key(self, out: Outgoing) -> str | None:
        return "slack:" + ",".join(sorted(out.group or (out.address,)))

    async def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await _request(
            self._session,
            self._policy,
            "POST",
            f"{self._api}/{method}",
            body=_json_body(body),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        check_response(response)
        try:
            data = response.json()
        except ValueError:  # not JSON, or cut at the body cap
            data = None
        if not isinstance(data, dict) or not data.get("ok"):
            error = str(data.get("error", "unknown")) if isinstance(data, dict) else "malformed"
            if error in SLACK_TRANSIENT_ERRORS:
                raise TransientDeliveryError(f"Slack {method}: {error}")
            raise PermanentDeliveryError(f"Slack {method}: {error}")
        return data

    async def send(self, out: Outgoing) -> Sent:
        if not self._token:
            raise PermanentDeliveryError("no Slack bot token (ROAC_SLACK_BOT_TOKEN)")
        members = out.group or (out.address,)
        opened = await self._call("conversations.open", {"users": ",".join(members)})
        channel = opened.get("channel", {}).get("id")
        if not channel:
            raise PermanentDeliveryError("Slack conversations.open returned no channel")
        message: dict[str, Any] = {
            "channel": channel,
            "text": out.rendered.chat[Style.SLACK],
            "unfurl_links": False,
        }
        if self._buttons and (blocks := slack_blocks.blocks_for(out)):
            message["blocks"] = blocks  # `text` stays: the notification and fallback
        posted = await self._call("chat.postMessage", message)
        return Sent(provider_id=str(posted.get("ts", "")))


class MatrixChannel:
    """Matrix client-server API: the transaction id makes a retried send idempotent."""

    def __init__(self, session: aiohttp.ClientSession, homeserver: str, token: str) -> None:
        self._session = session
        self._policy = session_policy(session)
        self._homeserver = homeserver.rstrip("/")
        self._token = token

    def rate_key(self, out: Outgoing) -> str | None:
        return f"matrix:{out.address}"

    async def send(self, out: Outgoing) -> Sent:
        if not (self._homeserver and self._token):
            raise PermanentDeliveryError("no Matrix homeserver or token (ROAC_MATRIX_*)")
        url = (
            f"{self._homeserver}/_matrix/client/v3/rooms/{quote(out.address, safe='')}"
            f"/send/m.room.message/{quote(out.idempotency_key, safe='')}"
        )
        response = await _request(
            self._session,
            self._policy,
            "PUT",
            url,
            body=_json_body({"msgtype": "m.text", "body": out.rendered.chat[Style.PLAIN]}),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        check_response(response)
        event_id = ""
        with contextlib.suppress(ValueError, AttributeError):
            event_id = str(response.json().get("event_id", ""))
        return Sent(provider_id=event_id)
