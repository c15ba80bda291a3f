"""The notifier's subscriptions: which queue feeds which use case (by event type), each message
decoded into the `EventBatch` its handler declares (which FastStream documents) and handed to
the consumer policy (shared/consumer.py) with it."""

from collections.abc import Awaitable, Callable, Mapping

from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage

from services.notifier.deliveries import DeliveryWorker
from services.notifier.people import PeopleRequests
from services.notifier.preference_changes import PreferenceChanges
from services.notifier.proposals import ProposalIntake
from services.notifier.resources import ResourceIntake
from shared.consumer import DecodedBatch, QueueParker, decode_event_batch, handle_message
from shared.events import EventBatch
from shared.topology import DELIVERY_QUEUE, NOTIFIER_QUEUE

Apply = Callable[[EventBatch], Awaitable[None]]


def by_type(use_cases: Mapping[str, Apply]) -> Apply:
    """One use case per event type (a message holds events of one type); a type nobody handles
    raises, so the consumer policy parks the message."""

    async def apply(batch: EventBatch) -> None:
        use_case = use_cases.get(batch.type)
        if use_case is None:
            raise ValueError(f"the notifier does not handle {batch.type} on {NOTIFIER_QUEUE.name}")
        await use_case(batch)

    return apply


def register(
    broker: RabbitBroker,
    proposals: ProposalIntake,
    resources: ResourceIntake,
    deliveries: DeliveryWorker,
    people: PeopleRequests,
    preferences: PreferenceChanges | None = None,
) -> None:
    """`preferences`: records changes made on a person's behalf elsewhere (their page shows
    them); without it (tests of the other use cases) such an event is parked."""
    preference_use_cases: dict[str, Apply] = (
        {"contact.preferences_changed.v1": preferences.apply} if preferences else {}
    )
    apply_proposal = by_type(
        {
            **preference_use_cases,
            "intro.proposed.v1": proposals.apply,
            "resource.proposed.v1": resources.apply,
            "contact.opted_out.v1": people.apply,
            "contact.erased.v1": people.apply,
            "contact.merged.v1": people.apply_merges,
            "contact.unmerged.v1": people.apply_merges,
        }
    )

    # One introduction that fails (seven participants, a row PostgreSQL refuses) is parked
    # alone; the others its message carries are applied (shared/consumer.py).
    proposal_parker = QueueParker(broker, NOTIFIER_QUEUE.name)
    job_parker = QueueParker(broker, DELIVERY_QUEUE.name)

    @broker.subscriber(
        NOTIFIER_QUEUE.rabbit_queue(declare=False),
        decoder=decode_event_batch,
        title="notifier",
        description="Proposed introductions and resources: recorded, and their first messages "
        "scheduled; opt-outs and erasures: nothing more sent to or about the person; merges: an "
        "open introduction of a person to themselves withdrawn; preferences changed on a "
        "person's behalf (ingest): shown on their preferences page.",
    )
    async def on_proposal_batch(batch: DecodedBatch, message: RabbitMessage) -> None:
        await handle_message(
            message,
            decoded=batch,
            service="notifier",
            queue=NOTIFIER_QUEUE.name,
            apply=apply_proposal,
            parker=proposal_parker,
        )

    @broker.subscriber(
        DELIVERY_QUEUE.rabbit_queue(declare=False),
        decoder=decode_event_batch,
        title="notifier.deliveries",
        description="One job per delivery attempt (retries come back through the delay queues).",
    )
    async def on_delivery_job(batch: DecodedBatch, message: RabbitMessage) -> None:
        await handle_message(
            message,
            decoded=batch,
            service="notifier",
            queue=DELIVERY_QUEUE.name,
            apply=deliveries.apply,
            parker=job_parker,
        )
