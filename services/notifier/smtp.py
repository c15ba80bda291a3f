"""Sending email over SMTP with aiosmtplib through a small pool of reused connections."""

from __future__ import annotations

import asyncio
import contextlib

import aiosmtplib

from services.notifier.delivery_policy import TransientDeliveryError, smtp_failure
from services.notifier.email_message import Email
from shared.settings import Settings


class SmtpSender:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        self._slots = asyncio.Semaphore(settings.smtp_pool_size)

    def _client(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_tls,
            start_tls=s.smtp_starttls,
            timeout=s.smtp_timeout_seconds,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        )

    async def _connected(self) -> aiosmtplib.SMTP:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                return client
        client = self._client()
        await client.connect()
        return client

    async def send(self, email: Email) -> None:
        """Send one message; raise PermanentDeliveryError or TransientDeliveryError on failure."""
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            try:
                client = await self._connected()
                try:
                    await client.sendmail(email.sender, [email.recipient], email.data)
                except aiosmtplib.SMTPServerDisconnected:
                    # An idle pooled connection the server closed: one fresh attempt.
                    client = self._client()
                    await client.connect()
                    await client.sendmail(email.sender, [email.recipient], email.data)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                await self._discard(client)
                refused = exc.recipients[0]
                raise smtp_failure(refused.code, refused.message) from exc
            except aiosmtplib.SMTPResponseException as exc:
                await self._discard(client)
                raise smtp_failure(exc.code, exc.message) from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await self._discard(client)
                raise TransientDeliveryError(f"SMTP unavailable: {type(exc).__name__}") from exc
            self._idle.put_nowait(client)

    @staticmethod
    async def _discard(client: aiosmtplib.SMTP | None) -> None:
        if client is not None and client.is_connected:
            with contextlib.suppress(Exception):
                await client.quit()

    async def close(self) -> None:
        while not self._idle.empty():
            await self._discard(self._idle.get_nowait())
