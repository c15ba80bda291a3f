"""The matcher's subscription to its queue: each message, decoded into the `EventBatch` its
handler declares (which FastStream documents), goes through the consumer policy (ack, requeue,
park) to the use case, `MatcherService.apply`."""

from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage

from services.matcher.service import MatcherService
from shared.coalescing import Coalescer
from shared.consumer import (
    TRANSIENT_ERRORS,
    DecodedBatch,
    QueueParker,
    decode_event_batch,
    handle_message,
)
from shared.topology import MATCHER_QUEUE


def register(broker: RabbitBroker, service: MatcherService) -> None:
    # Messages delivered together are applied in one transaction (group commit).
    coalescer = Coalescer(service.apply, transient=TRANSIENT_ERRORS, workers=2)
    # A message whose events fail apart from each other is applied in parts, by the service
    # itself (not regrouped by the coalescer); only the events that fail are parked, alone.
    parker = QueueParker(broker, MATCHER_QUEUE.name)

    @broker.subscriber(
        MATCHER_QUEUE.rabbit_queue(declare=False),
        decoder=decode_event_batch,
        title="matcher",
        description="Contacts, interests and delivery outcomes, applied to the matcher's store.",
    )
    async def on_event_batch(batch: DecodedBatch, message: RabbitMessage) -> None:
        await handle_message(
            message,
            decoded=batch,
            service="matcher",
            queue=MATCHER_QUEUE.name,
            apply=coalescer.apply,
            apply_item=service.apply,
            parker=parker,
        )
