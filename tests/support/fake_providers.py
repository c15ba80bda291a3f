"""A real local HTTP server standing in for Slack, Mattermost, Discord, Teams, Matrix and a
generic webhook receiver. Each endpoint checks the request the way the real service does
(method, content type, authentication, body shape, signature) and answers like it, including
its failures, so the channels are tested against the protocol rather than against a mock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from standardwebhooks import Webhook, WebhookVerificationError

from services.notifier.channels.webhook_signing import destination_secret
from tests.support.fake_slack import check_blocks
from tests.support.infra import free_port

SLACK_TOKEN = "xoxb-test-token"
MATRIX_TOKEN = "syt_test_token"


@dataclass
class Received:
    at: float
    provider: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ProviderState:
    # ROAC_WEBHOOK_SIGNING_KEY: each /hook/... URL verifies with its own secret derived from it.
    webhook_signing_key: bytes = b""
    received: list[Received] = field(default_factory=list)
    # Per path: statuses to answer before answering normally (e.g. [503, 503]).
    scripted: dict[str, deque[int]] = field(default_factory=lambda: defaultdict(deque))
    retry_after: dict[str, str] = field(default_factory=dict)
    matrix_events: dict[str, str] = field(default_factory=dict)
    idempotency_keys: set[str] = field(default_factory=set)
    discord_remaining: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, path: str, *statuses: int, retry_after: str | None = None) -> None:
        with self.lock:
            self.scripted[path].extend(statuses)
            if retry_after is not None:
                self.retry_after[path] = retry_after

    def record(self, provider: str, request: Request, body: Any) -> None:
        with self.lock:
            self.received.append(
                Received(time.monotonic(), provider, request.url.path, dict(request.headers), body)
            )

    def scripted_failure(self, path: str) -> Response | None:
        with self.lock:
            queue = self.scripted.get(path)
            if not queue:
                return None
            status = queue.popleft()
            headers = {"Retry-After": self.retry_after[path]} if path in self.retry_after else {}
        return Response(f"scripted {status}", status_code=status, headers=headers)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


def _json(request_body: bytes) -> Any:
    return json.loads(request_body)


def build_app(state: ProviderState) -> FastAPI:
    app = FastAPI()

    def bad(status: int, text: str) -> Response:
        return Response(text, status_code=status)

    @app.post("/slack/services/{rest:path}")
    async def slack_webhook(request: Request) -> Response:
        if (failure := state.scripted_failure(request.url.path)) is not None:
            state.record("slack_webhook", request, None)
            return failure
        if not request.headers.get("content-type", "").startswith("application/json"):
            return bad(400, "invalid_payload")
        body = _json(await request.body())
        state.record("slack_webhook", request, body)
        if not isinstance(body.get("text"), str) or not body["text"]:
            return bad(400, "no_text")
        return Response("ok", media_type="text/html")

    @app.post("/slack/api/{method}")
    async def slack_api(method: str, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {SLACK_TOKEN}":
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        body = _json(await request.body())
        state.record("slack_api", request, body)
        if method == "conversations.open":
            users = str(body.get("users", "")).split(",")
            if not users or any(not u.startswith("U") for u in users):
                return JSONResponse({"ok": False, "error": "user_not_found"})
            return JSONResponse({"ok": True, "channel": {"id": "D" + "".join(sorted(users))[:20]}})
        if method == "chat.postMessage":
            if not body.get("channel") or not body.get("text"):
                return JSONResponse({"ok": False, "error": "no_text"})
            if "blocks" in body and (problem := check_blocks(body["blocks"])):
                return JSONResponse({"ok": False, "error": "invalid_blocks", "detail": problem})
            return JSONResponse(
                {"ok": True, "channel": body["channel"], "ts": f"{time.time():.6f}"}
            )
        return JSONResponse({"ok": False, "error": "unknown_method"})

    @app.post("/slack/response/{response_id}")
    async def slack_response_url(response_id: str, request: Request) -> Response:
        # A click's response_url (hooks.slack.com/actions/... in Slack): updates the message.
        body = _json(await request.body())
        state.record("slack_response", request, body)
        if not isinstance(body.get("text"), str) or not body["text"]:
            return bad(400, "no_text")
        return Response("ok")

    @app.post("/mattermost/hooks/{hook_id}")
    async def mattermost(request: Request) -> Response:
        body = _json(await request.body())
        state.record("mattermost", request, body)
        if not isinstance(body.get("text"), str):
            return bad(400, '{"message": "Unable to parse incoming data"}')
        return Response("ok")

    @app.post("/discord/api/webhooks/{hook_id}/{token}")
    async def discord(hook_id: str, token: str, request: Request) -> Response:
        if (failure := state.scripted_failure(request.url.path)) is not None:
            state.record("discord", request, None)
            if failure.status_code == 429:
                return JSONResponse(
                    {"message": "You are being rate limited.", "retry_after": 0.5, "global": False},
                    429,
                )
            return failure
        body = _json(await request.body())
        state.record("discord", request, body)
        content = body.get("content")
        if not isinstance(content, str) or not 0 < len(content) <= 2000:
            return JSONResponse({"code": 50006, "message": "Cannot send an empty message"}, 400)
        if request.query_params.get("wait") != "true":
            return Response(status_code=204)
        headers = {}
        if state.discord_remaining is not None:
            headers = {
                "X-RateLimit-Remaining": str(state.discord_remaining),
                "X-RateLimit-Reset-After": "1.0",
            }
        return JSONResponse(
            {"id": str(int(time.time() * 1000)), "content": content}, headers=headers
        )

    @app.post("/teams/workflows/{flow_id}")
    async def teams(request: Request) -> Response:
        body = _json(await request.body())
        state.record("teams", request, body)
        try:
            [attachment] = body["attachments"]
            assert body["type"] == "message"
            assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
            assert attachment["content"]["type"] == "AdaptiveCard"
        except (KeyError, ValueError, AssertionError):
            return bad(400, "BadRequest: not an adaptive card message")
        return Response(status_code=202)

    @app.put("/matrix/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}")
    async def matrix(room: str, txn: str, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {MATRIX_TOKEN}":
            return JSONResponse({"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown token"}, 401)
        body = _json(await request.body())
        if body.get("msgtype") != "m.text" or not isinstance(body.get("body"), str):
            return JSONResponse({"errcode": "M_BAD_JSON", "error": "bad event"}, 400)
        with state.lock:
            known = state.matrix_events.get(txn)
        if known:  # the same transaction id: the same event, not a second message
            return JSONResponse({"event_id": known})
        state.record("matrix", request, body)
        event_id = f"$event{len(state.matrix_events)}"
        with state.lock:
            state.matrix_events[txn] = event_id
        return JSONResponse({"event_id": event_id})

    @app.post("/hook/{name}")
    async def generic(name: str, request: Request) -> Response:
        if (failure := state.scripted_failure(request.url.path)) is not None:
            state.record("webhook", request, None)
            return failure
        raw = await request.body()
        # As a receiver holding only its own `whsec_` secret verifies, with the Standard
        # Webhooks reference library.
        try:
            Webhook(destination_secret(state.webhook_signing_key, str(request.url))).verify(
                raw, dict(request.headers)
            )
        except WebhookVerificationError:
            state.record("webhook-rejected", request, None)
            return bad(401, "bad signature")
        # Like any receiver that honours webhook-id: a repeated id is acknowledged, not
        # processed again (recorded apart, so tests can count raw repeats too).
        key = request.headers.get("webhook-id", "")
        with state.lock:
            repeated = key in state.idempotency_keys
            state.idempotency_keys.add(key)
        state.record("webhook-repeat" if repeated else "webhook", request, _json(raw))
        return JSONResponse({"received": True, "repeat": repeated})

    return app


class ProviderServer:
    def __init__(self, state: ProviderState, port: int) -> None:
        self.state = state
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server = uvicorn.Server(
            uvicorn.Config(
                build_app(state), host="127.0.0.1", port=port, log_level="warning", access_log=False
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("fake provider server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@contextmanager
def fake_providers(webhook_signing_key: bytes, port: int | None = None) -> Iterator[ProviderServer]:
    server = ProviderServer(
        ProviderState(webhook_signing_key=webhook_signing_key), port or free_port()
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
