"""The notifier's subscriber: hands each message to the consumer policy and the service."""

from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage

from services.notifier.service import NotifierService
from shared.consumer import handle_message, skip_decoding
from shared.topology import NOTIFIER_QUEUE


def register(broker: RabbitBroker, service: NotifierService) -> None:
    @broker.subscriber(
        NOTIFIER_QUEUE.rabbit_queue(declare=False),
        decoder=skip_decoding,
        title="notifier",
        description="Proposed introductions, delivered to each participant.",
    )
    async def on_intro_batch(message: RabbitMessage) -> None:
        await handle_message(
            message, service="notifier", queue=NOTIFIER_QUEUE.name, apply=service.apply
        )
