"""Slack's interactivity requests, checked and read: plain Python, no I/O.

When someone clicks a button in roac's Slack message, Slack POSTs to the app's interactivity
URL (POST /slack/interactivity on the notifier's public port, services/notifier/slack_routes.py)
a form-encoded body whose `payload` field is JSON. Anyone on the internet can POST there, so a
request counts only when it is signed the way Slack documents
(https://api.slack.com/authentication/verifying-requests-from-slack):

- `X-Slack-Request-Timestamp`: unix seconds; refused when more than 5 minutes from now (either
  way), so a captured request cannot be replayed later;
- `X-Slack-Signature`: `v0=` + hex HMAC-SHA256, under the app's signing secret
  (ROAC_SLACK_SIGNING_SECRET), of `v0:<timestamp>:<the raw body>`, compared in constant time.

Within those 5 minutes a replayed click answers again, which is harmless: an answer is
idempotent ("already noted"). What a click means comes from its button's value, a signed link
token (channels/slack_blocks.py), so a valid Slack signature alone cannot answer for anyone.
The buttons are an ask's (accept, decline) and a check-in's ("did you meet?": met, not yet,
didn't happen, not for me); what the message says once answered is written here for both.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from services.notifier.answers import AnswerResult, Outcome
from services.notifier.channels.slack_blocks import ANSWER_ACTIONS, CHECKIN_ACTIONS, TEXT_BLOCK_ID
from services.notifier.checkin_service import CheckinResult, Result
from services.notifier.checkins import Reply, Verdict
from services.notifier.optin import IntroState

VERSION = "v0"
MAX_AGE_SECONDS = 5 * 60
_MAX_TIMESTAMP_DIGITS = 12


class RefusedRequest(Exception):
    """Not a request from Slack: a missing, stale or malformed timestamp, or a bad signature."""


class MalformedPayload(Exception):
    """Signed by Slack, but not an interaction payload roac can read."""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """`v0=` + hex HMAC-SHA256 of `v0:<timestamp>:<body>`, as Slack signs."""
    base = f"{VERSION}:{timestamp}:".encode() + body
    return f"{VERSION}=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def verify(
    secret: bytes,
    timestamp: str | None,
    presented: str | None,
    body: bytes,
    now: float,
    max_age: float = MAX_AGE_SECONDS,
) -> None:
    """Raise `RefusedRequest` unless `body` was signed with `secret` at a time within `max_age`
    seconds of `now`."""
    if not secret:
        raise RefusedRequest("no signing secret configured")
    if (
        not timestamp
        or len(timestamp) > _MAX_TIMESTAMP_DIGITS
        or not (timestamp.isascii() and timestamp.isdigit())
    ):
        raise RefusedRequest("missing or malformed X-Slack-Request-Timestamp")
    if abs(now - int(timestamp)) > max_age:
        raise RefusedRequest("stale X-Slack-Request-Timestamp (more than 5 minutes off)")
    if not presented:
        raise RefusedRequest("missing X-Slack-Signature")
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), presented.encode(errors="replace")):
        raise RefusedRequest("bad X-Slack-Signature")


@dataclass(frozen=True)
class ButtonClick:
    """One click on one of roac's answer buttons."""

    action_id: str
    token: str  # the button's value: a signed link token
    user_id: str
    response_url: str | None
    # The clicked message's blocks, to show it again with the answer instead of the buttons.
    message_blocks: list[dict[str, Any]] = field(default_factory=list)


def _payload(body: bytes) -> dict[str, Any]:
    try:
        form = parse_qs(body.decode(), max_num_fields=20, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedPayload("not a form-encoded body") from exc
    values = form.get("payload")
    if not values or len(values) != 1:
        raise MalformedPayload("no single `payload` field")
    try:
        payload = json.loads(values[0])
    except ValueError as exc:
        raise MalformedPayload("`payload` is not JSON") from exc
    if not isinstance(payload, dict):
        raise MalformedPayload("`payload` is not a JSON object")
    return payload


def parse_click(body: bytes) -> ButtonClick | None:
    """The click a verified body carries, or None for an interaction that is not a click on one
    of roac's answer buttons (acknowledged, nothing done). `MalformedPayload` for garbage."""
    payload = _payload(body)
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not isinstance(actions, list):
        raise MalformedPayload("block_actions without a list of actions")
    action = next(
        (
            a
            for a in actions
            if isinstance(a, dict)
            and a.get("type") == "button"
            and a.get("action_id") in ANSWER_ACTIONS | CHECKIN_ACTIONS
            and isinstance(a.get("value"), str)
            and a["value"]
        ),
        None,
    )
    if action is None:
        return None
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    response_url = payload.get("response_url")
    message = payload.get("message")
    blocks = message.get("blocks") if isinstance(message, dict) else None
    return ButtonClick(
        action_id=str(action["action_id"]),
        token=action["value"],
        user_id=user_id if isinstance(user_id, str) else "",
        response_url=response_url if isinstance(response_url, str) and response_url else None,
        message_blocks=[b for b in blocks if isinstance(b, dict)]
        if isinstance(blocks, list)
        else [],
    )


# What the message says once answered (Slack mrkdwn), in the words of the link's result page.
_ANSWERED = {
    Outcome.ACCEPTED: ":white_check_mark: You said yes. We introduce you as soon as everyone "
    "said yes.",
    Outcome.DECLINED: "You said no, thanks. This introduction ends here; nobody is told who "
    "said no.",
    Outcome.UNSUBSCRIBED: "Done: you will receive no more messages from us.",
    Outcome.REPEATED: "Already noted: we have your answer, nothing more to do.",
    Outcome.CLOSED: "This introduction has ended: it was closed before your answer arrived.",
    Outcome.EXPIRED: "This introduction expired unanswered. No harm done.",
    Outcome.INVALID: "This button does not work any more.",
    Outcome.ERASED: "Nothing more to do: you will receive no more messages from us.",
}
_EVERYONE_SAID_YES = ":white_check_mark: Everyone said yes: your introduction is on its way."
NOT_RECORDED = (
    "Your answer could not be recorded just now. Please click again in a minute, or use the "
    "link in the message."
)


# A check-in's answer, in the words of its link's result page (checkin.page.html.j2).
_CHECKIN_NOTED = {
    Reply.MET: ":white_check_mark: You met: glad to hear it. Thank you for telling us.",
    Reply.NOT_YET: "Noted: not yet. We will ask you once more, later.",
    Reply.DIDNT_HAPPEN: "Noted: it didn't happen. No harm done.",
    Reply.NOT_FOR_ME: "Understood: we will never introduce you to each other again. "
    "Nobody is told.",
}
_CHECKIN_OTHER = {
    Verdict.REPEATED: _ANSWERED[Outcome.REPEATED],
    Verdict.CLOSED: "Already answered: we keep the first answer. Thank you.",
    Verdict.EXPIRED: "This question has expired. No harm done.",
    Verdict.INVALID: _ANSWERED[Outcome.INVALID],
    Result.INVALID: _ANSWERED[Outcome.INVALID],
    Result.EXPIRED: "This question has expired. No harm done.",
    Result.ERASED: _ANSWERED[Outcome.ERASED],
}


def is_checkin(click: ButtonClick) -> bool:
    return click.action_id in CHECKIN_ACTIONS


def answered_text(result: AnswerResult | CheckinResult) -> str:
    if isinstance(result, CheckinResult):
        return checkin_answered_text(result)
    if result.outcome is Outcome.ACCEPTED and result.state is IntroState.ACCEPTED:
        return _EVERYONE_SAID_YES
    return _ANSWERED[result.outcome]


def checkin_answered_text(result: CheckinResult) -> str:
    """A check-in's answer; after *we met*, the link to the optional rating's page."""
    if result.outcome in (Verdict.NOTED, Verdict.ASK_AGAIN) and result.reply is not None:
        text = _CHECKIN_NOTED[result.reply]
    else:
        text = _CHECKIN_OTHER.get(result.outcome, _ANSWERED[Outcome.INVALID])
    if result.rate_url:
        text += f" <{result.rate_url}|How was it? Rate it, if you like>"
    return text


def answered_message(click: ButtonClick, result: AnswerResult | CheckinResult) -> dict[str, Any]:
    """The body POSTed to the click's `response_url`: the message replaced by its own text and
    the answer, without the buttons (so nobody clicks twice by accident)."""
    text = answered_text(result)
    kept = [
        b
        for b in click.message_blocks
        if b.get("block_id") == TEXT_BLOCK_ID and b.get("type") == "section"
    ]
    return {
        "replace_original": True,
        "text": text,
        "blocks": [
            *kept[:1],
            {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]},
        ],
    }


def not_recorded_message() -> dict[str, Any]:
    """Shown to the clicker alone when the answer could not be recorded: the buttons stay."""
    return {"replace_original": False, "response_type": "ephemeral", "text": NOT_RECORDED}
