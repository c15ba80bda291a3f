"""Assembling the MIME message for one recipient (stdlib `email`, no I/O).

Built with the `compat32` MIME classes and flattened once to bytes: the default `EmailMessage`
policy re-parses every header on assignment, which cost more CPU than everything else of a
delivery together. Header safety does not depend on that parsing: names and topics cannot
contain line breaks (validated at ingest, whitespace collapsed in the subject), the display name
is encoded by `formataddr`, and non-ASCII subjects are RFC 2047 encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr
from uuid import UUID

from services.notifier.rendering import Rendered


@dataclass(frozen=True)
class Email:
    sender: str  # envelope sender (MAIL FROM)
    recipient: str  # envelope recipient (RCPT TO)
    message_id: str
    data: bytes


def sender_domain(from_header: str) -> str:
    _, address = parseaddr(from_header)
    domain = address.rpartition("@")[2] if "@" in address else ""
    return domain or "roac.invalid"


def _header_text(text: str, name: str) -> str | Header:
    flat = " ".join(text.split())
    # A Header object (not its encoded string) lets the generator fold it after the name.
    return flat if flat.isascii() else Header(flat, "utf-8", header_name=name)


def build_email(
    rendered: Rendered,
    *,
    from_header: str,
    to_name: str,
    to_address: str,
    delivery_id: UUID,
    proposal_id: UUID,
    unsubscribe_url: str,
) -> Email:
    message = MIMEMultipart("alternative")
    message["From"] = from_header
    message["To"] = formataddr((" ".join(to_name.split()), to_address), charset="utf-8")
    message["Subject"] = _header_text(rendered.subject, "Subject")  # type: ignore[assignment]
    message["Date"] = format_datetime(datetime.now(UTC))
    # Stable per delivery: a resend after a crash carries the same id, which mail systems use
    # to recognise duplicates.
    message_id = f"<{delivery_id}@{sender_domain(from_header)}>"
    message["Message-ID"] = message_id
    message["X-Roac-Proposal"] = str(proposal_id)
    # RFC 8058 one-click unsubscribe: mail clients POST "List-Unsubscribe=One-Click" to the URL.
    if unsubscribe_url:
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.attach(MIMEText(rendered.text, "plain", "utf-8"))
    message.attach(MIMEText(rendered.html, "html", "utf-8"))
    return Email(
        sender=parseaddr(from_header)[1],
        recipient=to_address,
        message_id=message_id,
        data=message.as_bytes(),
    )
