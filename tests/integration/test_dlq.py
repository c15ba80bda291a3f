"""`roac dlq list` and `roac dlq replay` (services/dlq.py) on the real RabbitMQ and PostgreSQL:
a parked matcher, notifier, deliveries and ingress message is listed with its reason, and
replayed exactly once (applied after the replay; the parking queue is then empty; a replayed
delivery is sent once to a real SMTP server, whatever copies of its jobs the worker gets).
The same through the `roac dlq` command itself, on messages the services parked:
tests/integration/test_dlq_cli.py.

A vhost and a database of their own: the replayed events must not reach queues that other
integration tests of the session consume."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage

from services import dlq
from services.database import migrate
from services.ingest import subscriptions as ingest_subscriptions
from services.ingest.amqp_ingress import Ingress
from services.matcher import subscriptions as matcher_subscriptions
from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from services.notifier.channel_registry import build_channels, http_session
from services.notifier.deliveries import DeliveryWorker, RetryPolicy
from services.notifier.links import LinkKeyring, LinkMaker
from services.notifier.planning import QuietHours
from services.notifier.proposals import ProposalIntake
from services.notifier.rate_limit import RateLimiter
from services.notifier.rendering import MessageRenderer
from services.notifier.smtp import SmtpSender
from services.notifier.store.uow import NotifierStore
from services.notifier.subscriptions import by_type
from shared.broker import EventPublisher, make_broker
from shared.consumer import QueueParker, handle_message, skip_decoding
from shared.db import create_pool
from shared.events import (
    ChannelAddress,
    ChannelType,
    DeliveryJobData,
    DeliveryRequested,
    EventBatch,
    InterestData,
    InterestDeclared,
    IntroData,
    IntroProposed,
    IntroTopic,
    Participant,
    TopicRelation,
    encode_batch,
)
from shared.settings import Settings
from shared.topology import (
    DELIVERY_QUEUE,
    INGRESS_QUEUE,
    MATCHER_QUEUE,
    NOTIFIER_QUEUE,
    declare_topology,
)
from tests.support.amqp import connect, drain, tap
from tests.support.clock import FakeClock
from tests.support.infra import isolated_infra
from tests.support.smtp_sink import SmtpSink, smtp_sink


@pytest.fixture(scope="module")
def dlq_settings() -> Iterator[Settings]:
    with isolated_infra("dlq") as infra:
        settings = infra.settings()
        asyncio.run(migrate(settings))
        yield settings


@pytest.fixture
async def db(dlq_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(dlq_settings, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as created:
        yield created


@pytest.fixture
async def topology(dlq_settings: Settings) -> None:
    broker = make_broker(dlq_settings, service="test")
    await broker.connect()
    await declare_topology(broker)
    await broker.stop()


async def _start(broker: RabbitBroker) -> RabbitBroker:
    await broker.connect()
    await declare_topology(broker)
    await broker.start()
    return broker


async def _park_by_rejection(settings: Settings, queue: str, body: bytes, message_id: str) -> None:
    """As a consumer with a bug would: the message is rejected and RabbitMQ dead-letters it
    (x-death, reason `rejected`)."""
    connection = await connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue,
        )
        declared = await channel.declare_queue(queue, passive=True)
        for _ in range(100):
            message = await declared.get(no_ack=False, fail=False)
            if message is not None:
                await message.reject(requeue=False)
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"the message never reached {queue}")


async def _park_with_reason(
    settings: Settings, queue: str, body: bytes, message_id: str, headers: dict[str, Any]
) -> None:
    """As the notifier's and ingest's own parking do: straight into the parking queue."""
    connection = await connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=headers,
            ),
            routing_key=f"{queue}.dlq",
        )


async def _listed(settings: Settings, queue: str, message_id: str) -> dlq.ParkedMessage:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for parked in await dlq.list_parked(settings, [queue]):
            if parked.message_id == message_id:
                return parked
        await asyncio.sleep(0.2)
    raise AssertionError(f"{message_id} is not listed in {queue}")


async def _eventually(check: Callable[[], Awaitable[Any]], within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


async def _replay_once(settings: Settings, queue: str) -> None:
    """A dry run moves nothing; the replay sends the one message back; a second finds none."""
    dry = await dlq.replay(settings, queue, dry_run=True)
    assert dry.replayed == 1
    assert len(await dlq.list_parked(settings, [queue])) == 1
    report = await dlq.replay(settings, queue, limit=5)
    assert report.replayed == 1
    assert (await dlq.replay(settings, queue)).replayed == 0
    assert await dlq.list_parked(settings, [queue]) == []


def test_an_unknown_queue_is_refused_clearly() -> None:
    with pytest.raises(dlq.UnknownQueue, match=r"unknown parking queue 'roac\.nothing'"):
        dlq.parking_queue("roac.nothing")
    assert dlq.parking_queue("matcher").name == "roac.matcher.dlq"
    assert dlq.parking_queue("roac.ingest.ingress").name == "roac.ingest.ingress.dlq"


async def test_a_parked_matcher_message_is_replayed_once_and_applied(
    dlq_settings: Settings, db: asyncpg.Pool, topology: None
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"replayed {run}"
    event = InterestDeclared(
        source="ingest",
        correlation_id=f"c-{run}",
        data=InterestData(source="t", external_id=f"{run}-0", topic=topic),
    )
    await _park_by_rejection(
        dlq_settings, MATCHER_QUEUE.name, encode_batch([event]), str(event.message_id)
    )
    parked = await _listed(dlq_settings, "matcher", str(event.message_id))
    assert parked.reason == f"rejected by RabbitMQ in {MATCHER_QUEUE.name}"
    assert parked.size > 0
    assert parked.age_seconds is not None and parked.age_seconds < 60
    assert f"{run}-0" not in repr(parked)  # nothing of the body

    await _replay_once(dlq_settings, "matcher")
    broker = make_broker(dlq_settings, service="matcher", prefetch=10)
    service = MatcherService(MatcherStore(db), MatchingPolicy(min_score=99, candidates_per_topic=5))
    matcher_subscriptions.register(broker, service)
    await _start(broker)
    try:

        async def applied() -> int:
            count: int = await db.fetchval(
                "SELECT count(*) FROM matcher.interests i JOIN matcher.topics t "
                "ON t.id = i.topic_id WHERE t.name = $1",
                topic,
            )
            return count

        assert await _eventually(applied) == 1
        inbox = await db.fetchval(
            "SELECT count(*) FROM messaging.inbox WHERE message_id = $1", event.message_id
        )
        assert inbox == 1
    finally:
        await broker.stop()


def _introduction(run: str) -> IntroProposed:
    people = [
        Participant(
            source="t",
            external_id=f"{run}-{i}",
            name=f"Person {i}",
            channels=[ChannelAddress(type=ChannelType.EMAIL, address=f"p{i}.{run}@example.org")],
        )
        for i in range(2)
    ]
    return IntroProposed(
        source="matcher",
        correlation_id=f"c-{run}",
        data=IntroData(
            proposal_id=uuid.uuid4(),
            participants=people,
            topics=[IntroTopic(topic="kites", relation=TopicRelation.SHARED)],
            score=1.0,
            reason="r",
        ),
    )


def _worker(db: asyncpg.Pool, settings: Settings, sink: SmtpSink) -> DeliveryWorker:
    """The notifier's delivery worker, sending email to the SMTP sink."""
    configured = settings.model_copy(update={"smtp_port": sink.port})
    return DeliveryWorker(
        NotifierStore(db),
        build_channels(configured, http_session(configured), SmtpSender(configured)),
        MessageRenderer(),
        LinkMaker("http://roac.test", LinkKeyring.single(b"dlq-test-secret-0123456789abcdef")),
        retry=RetryPolicy(max_attempts=3, base_seconds=5, max_delay_seconds=600),
        quiet=QuietHours(enabled=False, start=21, end=8, fallback_timezone="UTC"),
        limiter=RateLimiter(100.0),
        clock=FakeClock(datetime.now(UTC)),
    )


def _intake(db: asyncpg.Pool) -> ProposalIntake:
    async def deliver_nothing(_: object) -> None:
        return None

    return ProposalIntake(
        NotifierStore(db),
        double_opt_in=True,
        ask_ttl=timedelta(hours=72),
        quiet=QuietHours(enabled=False, start=21, end=8, fallback_timezone="UTC"),
        clock=FakeClock(datetime.now(UTC)),
        deliver=deliver_nothing,
    )


async def test_a_parked_notifier_message_is_replayed_once_and_recorded(
    dlq_settings: Settings, db: asyncpg.Pool, topology: None
) -> None:
    run = uuid.uuid4().hex[:8]
    intro = _introduction(run)
    await _park_by_rejection(
        dlq_settings, NOTIFIER_QUEUE.name, encode_batch([intro]), str(intro.message_id)
    )
    parked = await _listed(dlq_settings, "notifier", str(intro.message_id))
    assert "rejected" in parked.reason
    await _replay_once(dlq_settings, NOTIFIER_QUEUE.dead_letter_queue)

    apply = by_type({"intro.proposed.v1": _intake(db).apply})
    broker = make_broker(dlq_settings, service="notifier", prefetch=10)
    parker = QueueParker(broker, NOTIFIER_QUEUE.name)

    @broker.subscriber(NOTIFIER_QUEUE.rabbit_queue(declare=False), decoder=skip_decoding)
    async def on_message(message: RabbitMessage) -> None:
        await handle_message(
            message, service="notifier", queue=NOTIFIER_QUEUE.name, apply=apply, parker=parker
        )

    await _start(broker)
    try:

        async def recorded() -> int:
            count: int = await db.fetchval(
                "SELECT count(*) FROM notifier.intros WHERE id = $1", intro.data.proposal_id
            )
            return count

        assert await _eventually(recorded) == 1
    finally:
        await broker.stop()


async def test_a_parked_delivery_is_replayed_once_with_a_fresh_budget_and_sent_once(
    dlq_settings: Settings, db: asyncpg.Pool, sink: SmtpSink, topology: None
) -> None:
    run = uuid.uuid4().hex[:8]
    intro = _introduction(run)
    await _intake(db).apply(EventBatch(events=[intro]))
    delivery = await db.fetchrow(
        "UPDATE notifier.deliveries SET status = 'parked', attempts = 8, "
        "generation = generation + 1 WHERE id = (SELECT id FROM notifier.deliveries "
        "WHERE proposal_id = $1 LIMIT 1) RETURNING id, generation",
        intro.data.proposal_id,
    )
    job = DeliveryRequested(
        source="notifier",
        correlation_id=f"c-{run}",
        data=DeliveryJobData(delivery_id=delivery["id"], generation=delivery["generation"]),
    )
    await _park_with_reason(
        dlq_settings,
        DELIVERY_QUEUE.name,
        encode_batch([job]),
        str(job.message_id),
        {"x-roac-reason": "out of attempts after 8: timeout"},
    )
    parked = await _listed(dlq_settings, "deliveries", str(job.message_id))
    assert parked.reason == "out of attempts after 8: timeout"
    assert parked.kind == "-" or parked.kind == "delivery.requested.v1"
    await _replay_once(dlq_settings, "deliveries")

    row = await db.fetchrow(
        "SELECT status, attempts, generation FROM notifier.deliveries WHERE id = $1",
        delivery["id"],
    )
    assert (row["status"], row["attempts"]) == ("pending", 0)
    jobs = await db.fetch(
        "SELECT body FROM messaging.outbox WHERE producer = 'notifier' "
        "AND routing_key = 'delivery.requested.v1'"
    )
    queued = [json.loads(r["body"])["data"] for r in jobs]
    assert {"delivery_id": str(delivery["id"]), "generation": row["generation"]} in queued

    # The notifier's worker takes the new job (twice: RabbitMQ may redeliver it) and the
    # parked copy's stale one: the person receives exactly one copy, the other person none.
    def job_of(generation: int) -> DeliveryRequested:
        data = DeliveryJobData(delivery_id=delivery["id"], generation=generation)
        return DeliveryRequested(source="notifier", correlation_id=f"c-{run}", data=data)

    worker = _worker(db, dlq_settings, sink)
    fresh = job_of(row["generation"])
    for batch in ([fresh], [fresh], [job_of(delivery["generation"])]):
        await worker.apply(EventBatch(events=batch))
    sent = await db.fetchrow(
        "SELECT status, attempts, recipient_external_id FROM notifier.deliveries WHERE id = $1",
        delivery["id"],
    )
    assert (sent["status"], sent["attempts"]) == ("sent", 1)
    recipient = int(sent["recipient_external_id"].removeprefix(f"{run}-"))
    copies = [len(sink.to(f"p{i}.{run}@example.org")) for i in range(2)]
    assert copies == [1 if i == recipient else 0 for i in range(2)]


async def test_a_parked_ingress_message_is_replayed_once_to_its_routing_key(
    dlq_settings: Settings, topology: None
) -> None:
    run = uuid.uuid4().hex[:8]
    body = json.dumps(
        {
            "source": "amqp-test",
            "external_id": f"{run}-0",
            "name": "Person Zero",
            "email": f"p0.{run}@example.org",
        }
    ).encode()
    message_id = f"contacts-{run}"
    await _park_with_reason(
        dlq_settings,
        INGRESS_QUEUE.name,
        body,
        message_id,
        {"x-roac-reason": "1 invalid field: email: ...", "x-roac-routing-key": "contacts"},
    )
    parked = await _listed(dlq_settings, "ingress", message_id)
    assert parked.reason.startswith("1 invalid field")
    assert parked.kind == "contacts"
    assert "Person Zero" not in repr(parked)

    broker = make_broker(dlq_settings, service="ingest", prefetch=10)
    ingest_subscriptions.register(
        broker,
        Ingress(
            EventPublisher(broker, "ingest"),
            ingest_subscriptions.QueueParker(broker, roac_user=dlq_settings.amqp_user),
            max_body_bytes=64 * 1024,
        ),
        roac_user=dlq_settings.amqp_user,
    )
    await _start(broker)
    connection = await connect(dlq_settings.amqp_url)
    try:
        async with connection:
            observed = await tap(connection, "contact.upserted.v1")
            await _replay_once(dlq_settings, "ingress")
            events = [
                e for m in await drain(observed, settle=2.0) for e in json.loads(m.body)["events"]
            ]
            assert [e["data"]["external_id"] for e in events] == [f"{run}-0"]
    finally:
        await broker.stop()
    assert await dlq.list_parked(dlq_settings, ["ingress"]) == []
