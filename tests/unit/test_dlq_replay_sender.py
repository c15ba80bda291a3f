"""Who a replayed ingress message is judged as (services/dlq.py `recorded_sender`), as plain
Python: only a sender header ingest wrote counts, never one an integration put on a message
RabbitMQ dead-lettered itself."""

from __future__ import annotations

import pytest

from services.dlq import recorded_sender

ROAC = "roac"


@pytest.mark.parametrize(
    ("user_id", "headers", "sender"),
    [
        # Parked by ingest: published as roac's own user, with the sender it saw.
        (ROAC, {"x-roac-sender": "crm-bus"}, "crm-bus"),
        (ROAC, {"x-roac-sender": b"crm-bus"}, "crm-bus"),
        (ROAC, {"x-roac-sender": ""}, ""),
        # Dead-lettered by RabbitMQ (rejected, expired, over the delivery limit): the
        # integration's own headers, a forged sender among them, count for nothing.
        ("crm-bus", {"x-roac-sender": "forum-bus"}, "crm-bus"),
        (None, {"x-roac-sender": "forum-bus"}, ""),
        ("crm-bus", {}, "crm-bus"),
        (None, {}, ""),
    ],
)
def test_only_a_sender_ingest_recorded_is_believed(
    user_id: str | None, headers: dict[str, object], sender: str
) -> None:
    assert recorded_sender(user_id, headers, roac_user=ROAC) == sender
