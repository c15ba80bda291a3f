"""Slack's interactivity endpoint on the notifier's public port: `POST /slack/interactivity`,
the Request URL of the Slack app's Interactivity settings (docs/notifier.md).

A click on an ask's or a check-in's button (channels/slack_blocks.py) is verified
(slack_interactivity.py: Slack's v0 signature under ROAC_SLACK_SIGNING_SECRET, a timestamp
within 5 minutes; else 401), then answered through the same use case as the web link
(`Answers.answer`, or `CheckIns.answer` for "did you meet?", with the button's link token),
then the message is updated through the click's `response_url` to show the answer instead of
the buttons.

Slack wants its answer within 3 seconds. The answer usually takes milliseconds; the endpoint
waits for it at most `ack_within` (2 s) and acknowledges anyway, the answer and the update
finishing in the background. The update is a POST to Slack (hooks.slack.com), made through the
same guarded session as every other outbound request (channels/outbound.py: HTTPS only, no
inward address, capped bodies, no redirects) and only to a host on ROAC_WEBHOOK_ALLOWED_HOSTS,
which lists hooks.slack.com by default: even a leaked signing secret cannot make the notifier
call anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Protocol

import aiohttp
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from services.notifier import slack_interactivity
from services.notifier.answers import AnswerResult
from services.notifier.channels.outbound import RefusedDestination, read_capped, session_policy
from services.notifier.checkin_service import CheckinResult
from services.notifier.clock import Clock
from services.notifier.delivery_policy import destination_allowed
from services.notifier.slack_interactivity import ButtonClick, MalformedPayload, RefusedRequest

log = logging.getLogger("roac.notifier.slack")

slack = APIRouter(tags=["slack"])
ACK_WITHIN_SECONDS = 2.0


class AnswerPort(Protocol):
    async def answer(self, token: str) -> AnswerResult: ...


class CheckinAnswerPort(Protocol):
    async def answer(self, token: str, rating: int | None = None) -> CheckinResult: ...


class Responder(Protocol):
    async def respond(self, url: str, message: dict[str, Any]) -> None: ...


class SlackResponder:
    """POSTs to a click's `response_url` through the guarded session."""

    def __init__(self, session: aiohttp.ClientSession, allowed_hosts: tuple[str, ...]) -> None:
        self._session = session
        self._policy = session_policy(session)
        self._allowed = allowed_hosts

    async def respond(self, url: str, message: dict[str, Any]) -> None:
        if not destination_allowed(url, self._allowed):
            log.warning("Slack response_url host not in ROAC_WEBHOOK_ALLOWED_HOSTS: not updated")
            return
        try:
            self._policy.check_url(url)
            async with self._session.post(
                url,
                data=json.dumps(message, separators=(",", ":")).encode(),
                headers={"Content-Type": "application/json", "User-Agent": "roac-notifier"},
                allow_redirects=False,
            ) as response:
                body = await read_capped(response, 4096)
                if response.status >= 300:
                    log.warning(
                        "Slack response_url answered %s: %s",
                        response.status,
                        body[:200].decode(errors="replace"),
                    )
        except (RefusedDestination, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Slack response_url not updated: %r", exc)


class SlackButtons:
    """The use case behind the endpoint: a verified click answered, its message updated."""

    def __init__(
        self,
        signing_secret: bytes,
        answers: AnswerPort,
        responder: Responder,
        clock: Clock,
        ack_within: float = ACK_WITHIN_SECONDS,
        checkins: CheckinAnswerPort | None = None,
    ) -> None:
        self._secret = signing_secret
        self._answers = answers
        self._checkins = checkins
        self._responder = responder
        self._clock = clock
        self._ack_within = ack_within
        self._tasks: set[asyncio.Task[None]] = set()

    def verify(self, body: bytes, timestamp: str | None, presented: str | None) -> None:
        slack_interactivity.verify(
            self._secret, timestamp, presented, body, self._clock.now().timestamp()
        )

    async def handle(self, click: ButtonClick) -> None:
        """Answer and update; return once done or after `ack_within`, whichever comes first."""
        task = asyncio.create_task(self._answer_and_update(click))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), self._ack_within)

    async def drain(self) -> None:
        """Wait for answers and updates still under way (tests; shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _answer_and_update(self, click: ButtonClick) -> None:
        try:
            result: AnswerResult | CheckinResult
            if slack_interactivity.is_checkin(click) and self._checkins is not None:
                result = await self._checkins.answer(click.token)
            else:
                result = await self._answers.answer(click.token)
        except Exception as exc:  # noqa: BLE001 - the clicker is told; the buttons stay
            log.warning("Slack click not answered: %r", exc)
            message = slack_interactivity.not_recorded_message()
        else:
            log.info("Slack click answered: %s", result.outcome)
            message = slack_interactivity.answered_message(click, result)
        if click.response_url:
            await self._responder.respond(click.response_url, message)


@slack.post("/slack/interactivity", include_in_schema=False)
async def interactivity(request: Request) -> Response:
    buttons: SlackButtons = request.app.state.slack_buttons
    body = await request.body()
    try:
        buttons.verify(
            body,
            request.headers.get("x-slack-request-timestamp"),
            request.headers.get("x-slack-signature"),
        )
    except RefusedRequest as exc:
        log.info("Slack interactivity request refused: %s", exc)
        return PlainTextResponse("invalid request signature", status_code=401)
    try:
        click = slack_interactivity.parse_click(body)
    except MalformedPayload as exc:
        return PlainTextResponse(f"malformed payload: {exc}", status_code=400)
    if click is not None:
        await buttons.handle(click)
    # An empty 200 acknowledges; the message is updated through response_url.
    return Response(status_code=200)
