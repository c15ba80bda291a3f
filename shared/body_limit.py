"""A request body limit enforced while reading, whether or not Content-Length is sent.

A body over the limit is answered `413` with a problem document, after the rest of the body
was read and discarded (at most `DRAIN_MAX_BYTES` more, for at most `DRAIN_SECONDS`), as
nginx's lingering close does: ordinary clients (Python's urllib, requests, httpx) write the
whole body before they read the answer, and a server that answers early and closes makes them
see a connection reset instead of the 413. A body announced (Content-Length) or found larger
than the drain bound, or a client too slow, still gets the answer early and the connection
closed: that 413 says `Connection: close`, without which the server (uvicorn) would keep the
connection alive and go on reading, and throwing away, whatever more the client sends.
"""

from __future__ import annotations

import asyncio
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.problems import problem_response

# How much of an oversized body is read and thrown away so that the client sees the 413.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0


# The answer to a body not read to its end: the connection cannot serve another request.
_CLOSE = {"Connection": "close"}


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, *, close: bool = False) -> None:
        super().__init__(
            413, f"The request body exceeds {limit} bytes.", headers=_CLOSE if close else None
        )


async def drain(
    receive: Receive, *, max_bytes: int = DRAIN_MAX_BYTES, seconds: float = DRAIN_SECONDS
) -> bool:
    """Read and discard the rest of the request body; True when all of it was read (within
    `max_bytes` and `seconds`), False when the client disconnected, was too slow or sent more."""
    deadline = time.monotonic() + seconds
    drained = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            return False
        if message["type"] != "http.request":
            return False  # http.disconnect
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
        if drained > max_bytes:
            return False


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > self._max:
                drained = int(value) <= DRAIN_MAX_BYTES and await drain(receive)
                response = problem_response(
                    413,
                    "Request too large",
                    f"The request body exceeds {self._max} bytes.",
                    headers=None if drained else _CLOSE,
                )
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    drained = not message.get("more_body", False) or await drain(receive)
                    # An HTTPException: FastAPI passes it through its body parsing unchanged.
                    raise BodyTooLarge(self._max, close=not drained)
            return message

        await self._app(scope, limited_receive, send)
