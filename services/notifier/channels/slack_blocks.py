"""Block Kit for Slack app mode: an ask with two buttons, *Yes, introduce me* and *No, thanks*,
and a check-in ("did you meet?") with four, *We met*, *Not yet* (not in the reminder after a
"not yet"), *It didn't happen* and *Not for me*, answered inside Slack
(services/notifier/slack_routes.py). Plain Python, no I/O.

Each button's `value` is the signed link token the ask's web link carries (services/notifier/
links.py), so a click is answered exactly as the link is, and no new secret exists for it: the
token names the action, the person and the introduction, sealed under the link keys. The
message keeps its `text` (the full chat message, web links included) as the fallback Slack
shows in notifications and clients without blocks; the blocks show the same message without
the line of answer links, which the buttons replace, and the buttons' labels are the links'
labels (so a German ask gets German buttons).

When anything does not fit Block Kit's limits (a section's 3,000 characters, a value's 2,000),
no blocks are built and the plain message with its links goes out as before.
"""

from __future__ import annotations

import re
from typing import Any

from services.notifier.channels.base import Outgoing
from services.notifier.rendering import Style
from shared.events import DeliveryKind

TEXT_BLOCK_ID = "roac.message"
ACTIONS_BLOCK_ID = "roac.answer"
ACCEPT_ACTION = "roac.accept"
DECLINE_ACTION = "roac.decline"
ANSWER_ACTIONS = frozenset({ACCEPT_ACTION, DECLINE_ACTION})
# A check-in's buttons: the key of its link in the message's `links`, its action, its label
# when the message gives none, its style.
CHECKIN_BUTTONS = (
    ("met", "roac.checkin_met", "We met", "primary"),
    ("not_yet", "roac.checkin_not_yet", "Not yet", None),
    ("didnt_happen", "roac.checkin_didnt_happen", "It didn't happen", None),
    ("not_for_me", "roac.checkin_not_for_me", "Not for me", None),
)
CHECKIN_ACTIONS = frozenset(action for _, action, _, _ in CHECKIN_BUTTONS)

SECTION_MAX_CHARS = 3000
BUTTON_VALUE_MAX_CHARS = 2000
BUTTON_LABEL_MAX_CHARS = 75
_LINK_PATH = "/links/"


def link_token(url: str) -> str | None:
    """The token of one of roac's link URLs (`<ROAC_PUBLIC_URL>/links/<token>`)."""
    _, found, token = url.rpartition(_LINK_PATH)
    return token if found and token and "/" not in token else None


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _label(text: str, url: str, default: str) -> str:
    """The label the Slack message gives the link to `url` (`<url|label>`)."""
    found = re.search(re.escape(url) + r"\|([^>]+)>", text)
    label = _unescape(found[1]).strip() if found else ""
    return (label or default)[:BUTTON_LABEL_MAX_CHARS]


def _button(action_id: str, label: str, token: str, style: str | None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "value": token,
    }
    if style:
        button["style"] = style
    return button


def answer_blocks(
    text: str, buttons: list[tuple[str, str, str, str | None]]
) -> list[dict[str, Any]] | None:
    """The blocks of a message whose Slack text is `text`: the message without its lines of
    answer links, then one button per (action, link URL, default label, style), each carrying
    its link's token and labelled as the link is; None when a link is not roac's or a limit is
    exceeded."""
    tokens = [link_token(url) for _, url, _, _ in buttons]
    if not buttons or any(not t or len(t) > BUTTON_VALUE_MAX_CHARS for t in tokens):
        return None
    urls = [url for _, url, _, _ in buttons]
    lines = [line for line in text.splitlines() if not any(url in line for url in urls)]
    body = "\n".join(lines).strip() or text
    if len(body) > SECTION_MAX_CHARS:
        return None
    return [
        {
            "type": "section",
            "block_id": TEXT_BLOCK_ID,
            "text": {"type": "mrkdwn", "text": body},
        },
        {
            "type": "actions",
            "block_id": ACTIONS_BLOCK_ID,
            "elements": [
                _button(action, _label(text, url, default), str(token), style)
                for (action, url, default, style), token in zip(buttons, tokens, strict=True)
            ],
        },
    ]


def ask_blocks(text: str, accept_url: str, decline_url: str) -> list[dict[str, Any]] | None:
    """The blocks of an ask: its text without the line of answer links, then the two buttons."""
    return answer_blocks(
        text,
        [
            (ACCEPT_ACTION, accept_url, "Yes, introduce me", "primary"),
            (DECLINE_ACTION, decline_url, "No, thanks", None),
        ],
    )


def checkin_blocks(text: str, links: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The blocks of a check-in: its text without the answer links, then a button per answer
    the message offers (the reminder after a "not yet" offers no second "not yet")."""
    buttons = [
        (action, links[key], default, style)
        for key, action, default, style in CHECKIN_BUTTONS
        if isinstance(links.get(key), str) and links[key] in text
    ]
    if not any(action == CHECKIN_BUTTONS[0][1] for action, _, _, _ in buttons):
        return None
    return answer_blocks(text, buttons)


def blocks_for(out: Outgoing) -> list[dict[str, Any]] | None:
    """The blocks of a message to one person, or None for a plain message: only asks and
    check-ins carry buttons (a group DM is an introduction, which has nothing to answer)."""
    if out.group:
        return None
    links = out.payload.get("links") or {}
    if out.kind in (DeliveryKind.CHECKIN, DeliveryKind.CHECKIN_AGAIN):
        return checkin_blocks(out.rendered.chat[Style.SLACK], links)
    if out.kind is not DeliveryKind.ASK:
        return None
    accept, decline = links.get("accept"), links.get("decline")
    if not isinstance(accept, str) or not isinstance(decline, str):
        return None
    return ask_blocks(out.rendered.chat[Style.SLACK], accept, decline)
