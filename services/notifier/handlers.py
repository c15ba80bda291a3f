"""The notifier's subscribers: each hands its message to the consumer policy and a use case."""

from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage

from services.notifier.deliveries import DeliveryWorker
from services.notifier.proposals import ProposalIntake
from shared.consumer import handle_message, skip_decoding
from shared.topology import DELIVERY_QUEUE, NOTIFIER_QUEUE


def register(broker: RabbitBroker, proposals: ProposalIntake, deliveries: DeliveryWorker) -> None:
    @broker.subscriber(
        NOTIFIER_QUEUE.rabbit_queue(declare=False),
        decoder=skip_decoding,
        title="notifier",
        description="Proposed introductions: recorded, and their first messages scheduled.",
    )
    async def on_intro_batch(message: RabbitMessage) -> None:
        await handle_message(
            message, service="notifier", queue=NOTIFIER_QUEUE.name, apply=proposals.apply
        )

    @broker.subscriber(
        DELIVERY_QUEUE.rabbit_queue(declare=False),
        decoder=skip_decoding,
        title="notifier.deliveries",
        description="One job per delivery attempt (retries come back through the delay queues).",
    )
    async def on_delivery_job(message: RabbitMessage) -> None:
        await handle_message(
            message, service="notifier", queue=DELIVERY_QUEUE.name, apply=deliveries.apply
        )
