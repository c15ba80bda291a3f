"""Slack's side of interactivity, for tests: the Block Kit checks Slack applies to
chat.postMessage (used by the fake Slack API in fake_providers.py), and button clicks made the
way Slack makes them: a `block_actions` payload, form-encoded, POSTed to the app's
interactivity URL and signed with the app's signing secret (written here from Slack's
documentation, independently of services/notifier/slack_interactivity.py, so the notifier is
checked against the protocol rather than against itself).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

# What Slack generates for an app: 32 hex digits.
SLACK_SIGNING_SECRET = secrets.token_hex(16)
SLACK_TEAM = "T0ROACTEST"


def check_blocks(blocks: Any) -> str | None:
    """Slack's `invalid_blocks` for what roac could get wrong, or None when acceptable."""
    if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
        return "blocks must be a list of 1 to 50"
    action_ids: set[str] = set()
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in (
            "section",
            "actions",
            "context",
        ):
            return "unsupported block"
        if len(str(block.get("block_id", ""))) > 255:
            return "block_id too long"
        if block["type"] == "section":
            text = block.get("text") or {}
            if (
                text.get("type") not in ("mrkdwn", "plain_text")
                or not 0 < len(text["text"]) <= 3000
            ):
                return "section text must be 1 to 3000 characters"
        if block["type"] == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                return "actions need 1 to 25 elements"
            for element in elements:
                if element.get("type") != "button":
                    return "unsupported element"
                label = element.get("text") or {}
                if label.get("type") != "plain_text" or not 0 < len(label.get("text", "")) <= 75:
                    return "button text must be plain_text of 1 to 75 characters"
                if not 0 < len(element.get("value", "")) <= 2000:
                    return "button value must be 1 to 2000 characters"
                action_id = element.get("action_id", "")
                if not 0 < len(action_id) <= 255 or action_id in action_ids:
                    return "action_id missing, too long or repeated"
                action_ids.add(action_id)
                if element.get("style") not in (None, "primary", "danger"):
                    return "bad button style"
    return None


def button(message: dict[str, Any], action_id: str) -> dict[str, Any]:
    """The button `action_id` of a posted message (chat.postMessage's body)."""
    for block in message.get("blocks", []):
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == action_id:
                return {**element, "block_id": block.get("block_id")}
    raise LookupError(f"no button {action_id!r} in {message!r}")


def click_body(message: dict[str, Any], action_id: str, user_id: str, response_url: str) -> bytes:
    """The form-encoded body Slack POSTs when `user_id` clicks `action_id` in `message`."""
    pressed = button(message, action_id)
    now = f"{time.time():.6f}"
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {
            "id": user_id,
            "username": user_id.lower(),
            "name": user_id.lower(),
            "team_id": SLACK_TEAM,
        },
        "api_app_id": "A0ROAC",
        "token": "verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": now,
            "channel_id": message["channel"],
            "is_ephemeral": False,
        },
        "trigger_id": f"{secrets.randbelow(10**12)}.{secrets.token_hex(8)}",
        "team": {"id": SLACK_TEAM, "domain": "roac-test"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": message["channel"], "name": "directmessage"},
        "message": {
            "type": "message",
            "user": "U0ROACBOT",
            "ts": now,
            "bot_id": "B0ROAC",
            "text": message["text"],
            "blocks": message.get("blocks", []),
        },
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": pressed["action_id"],
                "block_id": pressed["block_id"],
                "text": pressed["text"],
                "value": pressed["value"],
                **({"style": pressed["style"]} if "style" in pressed else {}),
                "type": "button",
                "action_ts": now,
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed_headers(
    body: bytes, *, timestamp: int | None = None, secret: str = SLACK_SIGNING_SECRET
) -> dict[str, str]:
    """The headers Slack sends with `body`: its timestamp and v0 signature."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + mac.hexdigest(),
    }
