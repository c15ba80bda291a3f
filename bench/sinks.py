"""Lean receivers for the notifier benchmark, run as their own process so they do not compete
with the load generator: an SMTP server and an HTTP server that accept and count, nothing more.

    python -m bench.sinks SMTP_PORT HTTP_PORT

GET /count on the HTTP port answers {"smtp": n, "http": m}; GET /times answers when each SMTP
recipient's first message arrived (unix seconds), for latency measurements.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session

COUNTS = {"smtp": 0, "http": 0}
FIRST_ARRIVAL: dict[str, float] = {}


class CountingHandler:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        COUNTS["smtp"] += len(envelope.rcpt_tos)
        now = time.time()
        for recipient in envelope.rcpt_tos:
            FIRST_ARRIVAL.setdefault(recipient, now)
        return "250 OK"


async def http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "GET" and scope["path"] == "/count":
        body = json.dumps(COUNTS).encode()
    elif scope["method"] == "GET" and scope["path"] == "/times":
        body = json.dumps(FIRST_ARRIVAL).encode()
    else:
        COUNTS["http"] += 1
        body = b'{"ok": true}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def main(smtp_port: int, http_port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: SMTP(CountingHandler()), host="127.0.0.1", port=smtp_port)
    config = uvicorn.Config(
        http_app, host="127.0.0.1", port=http_port, log_level="warning", access_log=False
    )
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
