"""A local mail catcher for `roac up`: an aiosmtpd SMTP server that keeps what it receives, plus a
small web page and a JSON API shaped like Mailpit's (`/api/v1/messages`), so the same commands
work against the Mailpit container that docker-compose runs.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from shared.http_app import http_app


@dataclass(frozen=True)
class CaughtMessage:
    id: str
    created: datetime
    sender: str
    recipients: tuple[str, ...]
    subject: str
    message_id: str
    text: str
    html: str
    raw: bytes = field(repr=False)

    def summary(self) -> dict[str, Any]:
        to = [
            {"Name": name, "Address": addr} for name, addr in getaddresses([self.recipients_header])
        ]
        return {
            "ID": self.id,
            "MessageID": self.message_id.strip("<>"),
            "From": {"Name": "", "Address": self.sender},
            "To": to,
            "Subject": self.subject,
            "Created": self.created.isoformat(),
            "Snippet": " ".join(self.text.split())[:200],
        }

    @property
    def recipients_header(self) -> str:
        return ", ".join(self.recipients)


class MailStore:
    """The most recent messages, newest first; safe to use from the SMTP thread and the test."""

    def __init__(self, capacity: int = 5000) -> None:
        self._messages: deque[CaughtMessage] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def add(self, sender: str, recipients: list[str], raw: bytes) -> CaughtMessage:
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        text_part = parsed.get_body(preferencelist=("plain",))
        html_part = parsed.get_body(preferencelist=("html",))
        with self._lock:
            caught = CaughtMessage(
                id=str(next(self._ids)),
                created=datetime.now(UTC),
                sender=sender,
                recipients=tuple(recipients),
                subject=str(parsed.get("Subject", "")),
                message_id=str(parsed.get("Message-ID", "")),
                text=text_part.get_content() if text_part is not None else "",
                html=html_part.get_content() if html_part is not None else "",
                raw=raw,
            )
            self._messages.appendleft(caught)
        return caught

    def all(self) -> list[CaughtMessage]:
        with self._lock:
            return list(self._messages)

    def to(self, address: str) -> list[CaughtMessage]:
        wanted = address.lower()
        return [m for m in self.all() if any(r.lower() == wanted for r in m.recipients)]

    def get(self, message_id: str) -> CaughtMessage | None:
        return next((m for m in self.all() if m.id == message_id), None)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()


class CatchingHandler:
    """aiosmtpd handler: accept every message and keep it in the store."""

    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        self.store.add(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], raw)
        return "250 Message accepted for delivery"


def web_app(store: MailStore) -> FastAPI:
    app = http_app(title="roac mail catcher", docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        rows = "".join(
            f"<tr><td>{m.created:%H:%M:%S}</td><td>{html.escape(m.recipients_header)}</td>"
            f"<td><a href='/view/{m.id}'>{html.escape(m.subject)}</a></td></tr>"
            for m in store.all()
        )
        return (
            "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5>"
            "<title>roac mail catcher</title><body style='font-family:sans-serif'>"
            f"<h1>Caught mail ({len(store.all())})</h1>"
            "<table cellpadding=4><tr><th>time</th><th>to</th><th>subject</th></tr>"
            f"{rows}</table></body>"
        )

    @app.get("/view/{message_id}", response_class=HTMLResponse)
    async def view(message_id: str) -> str:
        m = store.get(message_id)
        if m is None:
            raise HTTPException(404)
        return (
            "<!doctype html><meta charset=utf-8><body style='font-family:sans-serif'>"
            f"<p><a href='/'>back</a></p><p>To: {html.escape(m.recipients_header)}<br>"
            f"Subject: {html.escape(m.subject)}</p><pre>{html.escape(m.text)}</pre></body>"
        )

    @app.get("/api/v1/messages")
    async def messages() -> dict[str, Any]:
        found = store.all()
        return {"total": len(found), "count": len(found), "messages": [m.summary() for m in found]}

    @app.get("/api/v1/message/{message_id}")
    async def message(message_id: str) -> dict[str, Any]:
        m = store.get(message_id)
        if m is None:
            raise HTTPException(404)
        return {**m.summary(), "Text": m.text, "HTML": m.html}

    @app.delete("/api/v1/messages")
    async def delete_all() -> dict[str, str]:
        store.clear()
        return {"status": "ok"}

    return app


async def run(host: str, smtp_port: int, http_port: int) -> None:
    store = MailStore()
    loop = asyncio.get_running_loop()
    smtp_server = await loop.create_server(
        lambda: SMTP(CatchingHandler(store), hostname="roac-mailcatcher"), host=host, port=smtp_port
    )
    config = uvicorn.Config(
        web_app(store),
        host=host,
        port=http_port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )
    print(f"mail catcher: SMTP on {host}:{smtp_port}, web on http://{host}:{http_port}", flush=True)
    try:
        await uvicorn.Server(config).serve()
    finally:
        smtp_server.close()
        await smtp_server.wait_closed()
