"""Assembling the MIME message for one recipient (stdlib `email`, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from uuid import UUID

from services.notifier.rendering import RenderedMessage


def sender_domain(from_header: str) -> str:
    _, address = parseaddr(from_header)
    domain = address.rpartition("@")[2] if "@" in address else ""
    return domain or "roac.invalid"


def build_email(
    rendered: RenderedMessage,
    *,
    from_header: str,
    to_name: str,
    to_address: str,
    delivery_id: UUID,
    proposal_id: UUID,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = from_header
    username, _, domain = to_address.rpartition("@")
    # Address() encodes the display name and refuses line breaks: no header injection.
    message["To"] = Address(display_name=to_name, username=username, domain=domain)
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    # Stable per delivery: a resend after a crash carries the same id, which mail systems use
    # to recognise duplicates.
    message["Message-ID"] = f"<{delivery_id}@{sender_domain(from_header)}>"
    message["X-Roac-Proposal"] = str(proposal_id)
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
