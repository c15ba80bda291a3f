"""A real SMTP server for tests: aiosmtpd in a thread, keeping every message it accepts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.devstack.mailcatcher import CatchingHandler, CaughtMessage, MailStore
from tests.support.infra import free_port


class SinkHandler(CatchingHandler):
    """Accepts everything, except recipients listed in `refuse` (550, a permanent failure)."""

    def __init__(self, store: MailStore) -> None:
        super().__init__(store)
        self.refuse: set[str] = set()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class SmtpSink:
    def __init__(self, controller: Controller, handler: SinkHandler) -> None:
        self._controller = controller
        self.handler = handler
        self.store = handler.store
        self.port: int = controller.port

    def to(self, address: str) -> list[CaughtMessage]:
        return self.store.to(address)

    def wait_for(self, address: str, count: int = 1, within: float = 10.0) -> list[CaughtMessage]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = self.to(address)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return self.to(address)


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    handler = SinkHandler(MailStore(capacity=100_000))
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpSink(controller, handler)
    finally:
        controller.stop()
