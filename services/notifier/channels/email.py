"""Email over SMTP (a pooled aiosmtplib connection, STARTTLS or TLS as configured)."""

from __future__ import annotations

from services.notifier.channels.base import Outgoing, Sent
from services.notifier.email_message import build_email
from services.notifier.smtp import SmtpSender


class EmailChannel:
    def __init__(self, sender: SmtpSender, from_header: str) -> None:
        self._sender = sender
        self._from = from_header

    def rate_key(self, out: Outgoing) -> str | None:
        return None  # the SMTP pool paces itself

    async def send(self, out: Outgoing) -> Sent:
        email = build_email(
            out.rendered,
            from_header=self._from,
            to_name=out.to_name,
            to_address=out.address,
            delivery_id=out.delivery_id,
            proposal_id=out.proposal_id,
            unsubscribe_url=out.unsubscribe_url,
        )
        await self._sender.send(email)
        return Sent(provider_id=email.message_id)
