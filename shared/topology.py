"""The RabbitMQ topology, declared here and nowhere else.

    producers --(routing key = event type)--> roac.events (topic)
        roac.events --contact.upserted.v1, interest.declared.v1, delivery.*,
                      contact.opted_out.v1, contact.erased.v1,
                      interest.withdrawn.v1,
                      contact.preferences_changed.v1,
                      intro.feedback_given.v1--> roac.matcher (quorum)
        roac.events --intro.proposed.v1, resource.proposed.v1,
                      contact.opted_out.v1, contact.erased.v1,
                      contact.merged.v1, contact.unmerged.v1,
                      contact.preferences_changed.v1--> roac.notifier (quorum)
        roac.events --delivery.requested.v1--> roac.notifier.deliveries (quorum)
        roac.notifier.delay.<n>s (quorum, TTL n s) --(dead-letter)--> roac.notifier.deliveries
    a message rejected by its consumer, or delivered more than the delivery limit:
        roac.<consumer> --(dead-letter, routing key = queue name)--> roac.dead-letter (direct)
        roac.dead-letter --roac.<consumer>--> roac.<consumer>.dlq (quorum, parked until replayed)
    integrations that prefer the broker to HTTP (docs/ingress.md):
        integration --(routing key contacts | interests | interests.withdraw)--> roac.ingress
        roac.ingress --#--> roac.ingest.ingress (quorum, consumed by ingest)
        ingest --(invalid: original body + x-roac-reason)--> roac.ingest.ingress.dlq

Every service declares the whole topology when it starts (declarations are idempotent), so an
event published before its consumer ever ran is queued, not returned as unroutable, and a
binding added to a queue here reaches an existing deployment at its next start (bindings are
only ever added here: one removed from this list stays bound until removed by hand).

Works on RabbitMQ 3.10 and 4.x: quorum queues with an explicit `x-delivery-limit` (3.10 has no
default, 4.x defaults to 20), at-least-once dead-lettering (which needs `reject-publish` overflow),
no plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas.queue import QuorumQueueArgs

EVENTS_EXCHANGE = RabbitExchange("roac.events", type=ExchangeType.TOPIC, durable=True)
DEAD_LETTER_EXCHANGE = RabbitExchange("roac.dead-letter", type=ExchangeType.DIRECT, durable=True)

# Deliveries of one message before it is parked. A constant, not a setting: a queue redeclared
# with other arguments fails with PRECONDITION_FAILED; change it with a RabbitMQ policy instead.
DELIVERY_LIMIT = 10


@dataclass(frozen=True)
class ConsumerQueue:
    """A quorum queue one service consumes, the event types bound to it, and its parking queue."""

    name: str
    bindings: tuple[str, ...]

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dlq"

    def arguments(self) -> dict[str, str | int]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
            "x-dead-letter-routing-key": self.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def rabbit_queue(self, *, declare: bool = True) -> RabbitQueue:
        return RabbitQueue(
            self.name,
            queue_type=QueueType.QUORUM,
            durable=True,
            declare=declare,
            arguments=cast(QuorumQueueArgs, self.arguments()),
        )


MATCHER_QUEUE = ConsumerQueue(
    "roac.matcher",
    (
        "contact.upserted.v1",
        "interest.declared.v1",
        "delivery.succeeded.v1",
        "delivery.failed.v1",
        "contact.opted_out.v1",
        "contact.erased.v1",
        "interest.withdrawn.v1",
        # A person's own pause, caps, channel order, language, opting back in (preferences).
        "contact.preferences_changed.v1",
        # Answers to "did you meet?" (the notifier's check-ins), applied as feedback.
        "intro.feedback_given.v1",
    ),
)
NOTIFIER_QUEUE = ConsumerQueue(
    "roac.notifier",
    (
        "intro.proposed.v1",
        "resource.proposed.v1",
        "contact.opted_out.v1",
        "contact.erased.v1",
        # Merges: an open introduction between two identities of one person is withdrawn.
        "contact.merged.v1",
        "contact.unmerged.v1",
        # Preferences changed on a person's behalf (ingest), shown on their preferences page;
        # the notifier's own (from that page) are skipped: recorded with their outbox row.
        "contact.preferences_changed.v1",
    ),
)
# The notifier's own work queue: one message per delivery attempt to make.
DELIVERY_QUEUE = ConsumerQueue("roac.notifier.deliveries", ("delivery.requested.v1",))

CONSUMER_QUEUES: tuple[ConsumerQueue, ...] = (MATCHER_QUEUE, NOTIFIER_QUEUE, DELIVERY_QUEUE)

# AMQP ingress: integrations publish what POST /v1/contacts and /v1/interests take, with these
# routing keys. Bound with `#`, not the two keys: a message with a mistyped key then reaches
# ingest and is parked with a reason, rather than being returned or dropped at the exchange.
INGRESS_EXCHANGE = RabbitExchange("roac.ingress", type=ExchangeType.TOPIC, durable=True)
INGRESS_CONTACTS = "contacts"
INGRESS_INTERESTS = "interests"
# What DELETE /v1/interests/... does, for one or a batch of interests.
INGRESS_WITHDRAW_INTERESTS = "interests.withdraw"
INGRESS_ROUTING_KEYS: tuple[str, ...] = (
    INGRESS_CONTACTS,
    INGRESS_INTERESTS,
    INGRESS_WITHDRAW_INTERESTS,
)
# Not in CONSUMER_QUEUES: it is bound to roac.ingress, not to roac.events, and carries request
# bodies rather than event batches. Same arguments: delivery limit, at-least-once dead-lettering.
# Ingest parks what fails validation in its `.dlq` itself, with the reason in `x-roac-reason`.
INGRESS_QUEUE = ConsumerQueue("roac.ingest.ingress", ("#",))

# The headers of a parked message (roac.*.dlq), set by whoever parked it and read by `roac dlq`.
REASON_HEADER = "x-roac-reason"  # why it was parked, never holding the body's values
QUEUE_HEADER = "x-roac-queue"  # the queue a consumer took it from: replayed there
ROUTING_KEY_HEADER = "x-roac-routing-key"  # an ingress message's own routing key
# Who sent a parked ingress message (its user_id; empty without one): ingest writes it on the
# copies it parks as roac's own user, a replay is judged as that sender (docs/ingress.md).
SENDER_HEADER = "x-roac-sender"
REPLAYED_HEADER = "x-roac-replayed"  # the `roac dlq replay` run that sent it back


@dataclass(frozen=True)
class DelayQueue:
    """Holds a delivery job for `seconds` (queue-level TTL), then dead-letters it back into the
    delivery queue. Fixed tiers, because RabbitMQ expires only the message at a queue's head: one
    queue with per-message TTLs would hold a 1 s retry behind a 10 min one. Longer waits (quiet
    hours) go round a tier again until the job is due."""

    seconds: int

    @property
    def name(self) -> str:
        return f"roac.notifier.delay.{self.seconds}s"

    def arguments(self) -> dict[str, str | int]:
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": self.seconds * 1000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": DELIVERY_QUEUE.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }


DELAY_QUEUES: tuple[DelayQueue, ...] = tuple(DelayQueue(s) for s in (1, 5, 30, 120, 600, 3600))


def delay_queue_for(seconds: float) -> DelayQueue:
    """The longest tier not longer than the wait (the job comes back early and goes round again),
    or the shortest tier for waits under a second."""
    fitting = [d for d in DELAY_QUEUES if d.seconds <= seconds]
    return fitting[-1] if fitting else DELAY_QUEUES[0]


async def declare_topology(broker: RabbitBroker) -> None:
    """Declare exchanges, consumer queues, their bindings and dead-letter queues (idempotent)."""
    for consumer in CONSUMER_QUEUES:
        await declare_consumer_queue(broker, consumer)
    await declare_consumer_queue(broker, INGRESS_QUEUE, exchange=INGRESS_EXCHANGE)
    for delay in DELAY_QUEUES:
        await broker.declare_queue(
            RabbitQueue(
                delay.name,
                queue_type=QueueType.QUORUM,
                durable=True,
                arguments=cast(QuorumQueueArgs, delay.arguments()),
            )
        )


async def declare_consumer_queue(
    broker: RabbitBroker, consumer: ConsumerQueue, *, exchange: RabbitExchange = EVENTS_EXCHANGE
) -> None:
    """One consumer's quorum queue, bound to its routing keys on `exchange`, and its dead-letter
    queue."""
    events = await broker.declare_exchange(exchange)
    dead_letter = await broker.declare_exchange(DEAD_LETTER_EXCHANGE)
    parked = await broker.declare_queue(
        RabbitQueue(consumer.dead_letter_queue, queue_type=QueueType.QUORUM, durable=True)
    )
    await parked.bind(dead_letter, routing_key=consumer.name)
    queue = await broker.declare_queue(consumer.rabbit_queue())
    for routing_key in consumer.bindings:
        await queue.bind(events, routing_key=routing_key)
