"""The notifier's use case: deliver each introduction to each participant exactly once.

Per (introduction, recipient, channel) there is one delivery row. Delivering locks that row,
sends, records the outcome and queues the delivery event in the outbox, all in one transaction:
a redelivered proposal finds the row `sent` and sends nothing. The one window for a duplicate is
a crash after the SMTP server accepted the message and before the commit; the resend then
carries the same Message-ID.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.message import EmailMessage
from typing import TYPE_CHECKING, Protocol

from services.notifier import metrics
from services.notifier.delivery_policy import PermanentDeliveryError, delivery_id
from services.notifier.email_message import build_email
from services.notifier.rendering import IntroRenderer, email_address
from shared.events import (
    ChannelType,
    ContactRef,
    DeliveryData,
    DeliveryFailed,
    DeliveryFailureData,
    DeliverySucceeded,
    EventBatch,
    IntroProposed,
    Participant,
)
from shared.metrics import EVENTS_CONSUMED

if TYPE_CHECKING:
    from services.notifier.store import NotifierStore

log = logging.getLogger("roac.notifier")


class EmailSender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class NotifierService:
    def __init__(
        self, store: NotifierStore, renderer: IntroRenderer, sender: EmailSender, from_header: str
    ) -> None:
        self._store = store
        self._renderer = renderer
        self._sender = sender
        self._from = from_header

    async def apply(self, batch: EventBatch) -> None:
        for event in batch.events:
            if not isinstance(event, IntroProposed):
                raise ValueError(f"the notifier does not handle {event.type}")
            results = await asyncio.gather(
                *(self._deliver(event, p) for p in event.data.participants), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise failures[0]
            EVENTS_CONSUMED.labels("notifier", event.type, "processed").inc()

    async def _deliver(self, intro: IntroProposed, recipient: Participant) -> None:
        channel = ChannelType.EMAIL
        proposal_id = intro.data.proposal_id
        key = delivery_id(proposal_id, recipient.source, recipient.external_id, channel.value)
        async with self._store.unit_of_work() as uow:
            state = await uow.lock_delivery(
                key, proposal_id, recipient.source, recipient.external_id, channel.value
            )
            if state.status != "pending":
                metrics.DELIVERIES.labels(channel.value, "duplicate").inc()
                return
            attempts = state.attempts + 1
            ref = ContactRef(source=recipient.source, external_id=recipient.external_id)
            data = {
                "delivery_id": key,
                "proposal_id": proposal_id,
                "recipient": ref,
                "channel": channel,
                "attempts": attempts,
            }
            envelope = {
                "source": "notifier",
                "correlation_id": intro.correlation_id,
                "causation_id": intro.message_id,
                "integration": intro.integration,
            }
            address = email_address(recipient)
            try:
                if address is None:
                    raise PermanentDeliveryError("the recipient has no email channel")
                message = build_email(
                    self._renderer.render_intro(intro.data, recipient),
                    from_header=self._from,
                    to_name=recipient.name,
                    to_address=address,
                    delivery_id=key,
                    proposal_id=proposal_id,
                )
                started = time.perf_counter()
                await self._sender.send(message)
                metrics.SEND_SECONDS.labels(channel.value).observe(time.perf_counter() - started)
            except PermanentDeliveryError as exc:
                await uow.mark_failed(key, attempts, str(exc))
                await uow.enqueue(
                    [
                        DeliveryFailed(
                            **envelope,
                            data=DeliveryFailureData(**data, reason=str(exc), permanent=True),
                        )
                    ]
                )
                metrics.DELIVERIES.labels(channel.value, "failed_permanent").inc()
                log.warning("delivery %s failed permanently: %s", key, exc)
                return
            except Exception:
                metrics.DELIVERIES.labels(channel.value, "failed_transient").inc()
                raise
            await uow.mark_sent(key, attempts, str(message["Message-ID"]))
            await uow.enqueue([DeliverySucceeded(**envelope, data=DeliveryData(**data))])
            metrics.DELIVERIES.labels(channel.value, "sent").inc()
