"""One bad item never takes others down: a message carrying several requests' events (ingest's
coalescing publisher, the outbox relay's batches) in which one event is refused, by the schema
or by PostgreSQL, is split; only that event is parked, alone, with its reason, and the others
are applied (shared/consumer.py). Live RabbitMQ and PostgreSQL; the poisoned messages are
published straight to the consumer's queue, past ingest's validation."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage

from services.matcher import subscriptions as matcher_subscriptions
from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from services.notifier.planning import QuietHours
from services.notifier.proposals import ProposalIntake
from services.notifier.store.uow import NotifierStore
from services.notifier.subscriptions import by_type
from shared.broker import make_broker
from shared.consumer import QueueParker, handle_message
from shared.consumer import skip_decoding as skip
from shared.events import (
    ChannelAddress,
    ChannelType,
    ContactData,
    ContactUpserted,
    EventBatch,
    InterestData,
    InterestDeclared,
    IntroData,
    IntroProposed,
    IntroTopic,
    Participant,
    TopicRelation,
)
from shared.settings import Settings
from shared.topology import (
    MATCHER_QUEUE,
    NOTIFIER_QUEUE,
    QUEUE_HEADER,
    REASON_HEADER,
    declare_topology,
)
from tests.support.amqp import connect
from tests.support.clock import FakeClock
from tests.support.refusals import refused_rows


async def _purge(settings: Settings, *names: str) -> None:
    connection = await connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await (await channel.declare_queue(name, passive=True)).purge()


async def _parked(settings: Settings, queue: str, count: int) -> list[aio_pika.IncomingMessage]:
    """The first `count` messages of `queue`'s parking queue (waiting up to 20 s), then 1 s more
    to see that nothing else arrives."""
    connection = await connect(settings.amqp_url)
    found: list[aio_pika.IncomingMessage] = []
    async with connection:
        channel = await connection.channel()
        parked = await channel.declare_queue(f"{queue}.dlq", passive=True)
        deadline = time.monotonic() + 20
        quiet_until: float | None = None
        while time.monotonic() < deadline:
            message = await parked.get(no_ack=True, fail=False)
            if message is not None:
                found.append(message)  # type: ignore[arg-type]
                continue
            if len(found) >= count:
                quiet_until = quiet_until or time.monotonic() + 1.0
                if time.monotonic() > quiet_until:
                    break
            await asyncio.sleep(0.1)
    return found


async def _publish(settings: Settings, queue: str, body: bytes, routing_type: str) -> None:
    connection = await connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                message_id=str(uuid.uuid4()),
                type=routing_type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue,
        )


async def _until(check: Any, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


@pytest.fixture
async def matcher(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[RabbitBroker]:
    """The matcher's own subscriber (coalescer, consumer policy, parker) on roac.matcher."""
    broker = make_broker(settings, service="matcher", prefetch=10)
    service = MatcherService(
        MatcherStore(pool), MatchingPolicy(min_score=0.5, candidates_per_topic=50)
    )
    matcher_subscriptions.register(broker, service)
    broker.service = service  # type: ignore[attr-defined]
    await broker.connect()
    await declare_topology(broker)
    await _purge(settings, MATCHER_QUEUE.name, MATCHER_QUEUE.dead_letter_queue)
    await broker.start()
    yield broker
    await broker.stop()


def _interest(run: str, i: int, integration: str, topic: str = "") -> InterestDeclared:
    return InterestDeclared(
        source="ingest",
        correlation_id=f"c-{run}-{integration}",
        integration=integration,
        data=InterestData(
            source=integration, external_id=f"{run}-{i}", topic=topic or f"poison {run} {i}"
        ),
    )


def _document(event: InterestDeclared) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(event.model_dump_json())
    return document


def _contact(run: str, i: int, integration: str) -> ContactUpserted:
    return ContactUpserted(
        source="ingest",
        correlation_id=f"c-{run}",
        data=ContactData(
            source=integration,
            external_id=f"{run}-{i}",
            name=f"Person {i}",
            email=f"p{i}.{run}@example.org",
        ),
    )


async def _interests_applied(pool: asyncpg.Pool, run: str) -> set[str]:
    rows = await pool.fetch(
        "SELECT t.name FROM matcher.interests i JOIN matcher.topics t ON t.id = i.topic_id "
        "WHERE t.name LIKE $1",
        f"poison {run} %",
    )
    return {r["name"] for r in rows}


async def test_a_coalesced_matcher_message_parks_only_its_poisoned_items(
    settings: Settings, pool: asyncpg.Pool, matcher: RabbitBroker
) -> None:
    run = uuid.uuid4().hex[:8]
    service: MatcherService = matcher.service  # type: ignore[attr-defined]
    # Two reachable people; the first already likes a rare topic.
    await service.apply(EventBatch(events=[_contact(run, 4, "forum"), _contact(run, 99, "crm")]))
    await service.apply(EventBatch(events=[_interest(run, 99, "crm", f"shared {run}")]))
    # Three integrations' requests in one message, as the coalescing publisher packs them.
    items = [_document(_interest(run, i, ("crm", "forum", "signup")[i % 3])) for i in range(12)]
    # PostgreSQL refuses this one: the second person's interest in the rare topic proposes an
    # introduction, and a check this test adds refuses that proposal.
    items[4] = _document(_interest(run, 4, "forum", f"shared {run}"))
    items[4]["correlation_id"] = f"c-{run}-refused"
    # The schema refuses this one (a NUL in the topic): the consumer validates events too.
    items[9]["data"]["topic"] = f"poison {run} \x00 9"
    # Not poison: a line break in the correlation id is replaced by a token, never logged,
    # and the event applied.
    items[7]["correlation_id"] = f"c-{run}\nforged log line"
    async with refused_rows(pool, "matcher.proposals", "correlation_id", f"c-{run}-refused"):
        await _publish(
            settings,
            MATCHER_QUEUE.name,
            json.dumps({"events": items}).encode(),
            "interest.declared.v1",
        )
        parked = await _parked(settings, MATCHER_QUEUE.name, 2)
    assert len(parked) == 2, [m.headers for m in parked]
    by_id = {m.message_id: m for m in parked}
    check = by_id[items[4]["message_id"]]
    assert "CheckViolationError (SQLSTATE 23514)" in str(check.headers[REASON_HEADER])
    nul = by_id[items[9]["message_id"]]
    assert "data.topic" in str(nul.headers[REASON_HEADER])
    for message in parked:
        assert message.headers[QUEUE_HEADER] == MATCHER_QUEUE.name
        assert message.type == "interest.declared.v1"
        [event] = json.loads(message.body)["events"]  # each parked alone
        assert event["message_id"] == message.message_id
        assert "\x00" not in str(message.headers[REASON_HEADER])

    expected = {f"poison {run} {i}" for i in range(12) if i not in (4, 9)}
    applied = await _until(lambda: _applied_all(pool, run, expected))
    assert applied == expected
    # The original message was acked: nothing waits in the queue.
    connection = await connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(MATCHER_QUEUE.name, passive=True)
        assert await queue.get(no_ack=True, fail=False) is None


async def _applied_all(pool: asyncpg.Pool, run: str, expected: set[str]) -> set[str] | None:
    applied = await _interests_applied(pool, run)
    return applied if applied >= expected else None


def _participant(run: str, i: int) -> Participant:
    return Participant(
        source="t",
        external_id=f"{run}-{i}",
        name=f"Person {i}",
        channels=[ChannelAddress(type=ChannelType.EMAIL, address=f"p{i}.{run}@example.org")],
    )


def _introduction(run: str, n: int, people: int = 2) -> dict[str, Any]:
    event = IntroProposed(
        source="matcher",
        correlation_id=f"c-{run}",
        data=IntroData(
            proposal_id=uuid.uuid4(),
            participants=[_participant(run, n * 10 + k) for k in range(2)],
            topics=[IntroTopic(topic="kites", relation=TopicRelation.SHARED)],
            score=1.0,
            reason="r",
        ),
    )
    document: dict[str, Any] = json.loads(event.model_dump_json())
    extra = [json.loads(_participant(run, n * 10 + k).model_dump_json()) for k in range(2, people)]
    document["data"]["participants"] += extra
    return document


async def test_a_relayed_notifier_message_parks_only_the_introduction_that_fails(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    clock = FakeClock(datetime.now(UTC))

    async def deliver_nothing(_: object) -> None:
        return None

    intake = ProposalIntake(
        NotifierStore(pool),
        double_opt_in=True,
        ask_ttl=timedelta(hours=72),
        quiet=QuietHours(enabled=False, start=21, end=8, fallback_timezone="UTC"),
        clock=clock,
        deliver=deliver_nothing,
    )
    apply = by_type({"intro.proposed.v1": intake.apply})
    broker = make_broker(settings, service="notifier", prefetch=10)
    parker = QueueParker(broker, NOTIFIER_QUEUE.name)

    @broker.subscriber(NOTIFIER_QUEUE.rabbit_queue(declare=False), decoder=skip)
    async def on_message(message: RabbitMessage) -> None:
        await handle_message(
            message, service="notifier", queue=NOTIFIER_QUEUE.name, apply=apply, parker=parker
        )

    await broker.connect()
    await declare_topology(broker)
    await _purge(settings, NOTIFIER_QUEUE.name, NOTIFIER_QUEUE.dead_letter_queue)
    await broker.start()
    try:
        run = uuid.uuid4().hex[:8]
        # A relayed message of 100 introductions: one plans a group of 7 (the schema's maximum
        # is 6) and one PostgreSQL refuses (a check this test adds). One names a person with a
        # NUL: not poison, the notifier replaces it when it reads what the matcher wrote.
        intros = [_introduction(run, n) for n in range(100)]
        intros[17] = _introduction(run, 17, people=7)
        intros[30]["data"]["participants"][0]["name"] = "Nul \x00 Name"
        intros[60]["correlation_id"] = f"c-{run}-refused"
        poisoned = (17, 60)
        async with refused_rows(pool, "notifier.intros", "correlation_id", f"c-{run}-refused"):
            body = json.dumps({"events": intros}).encode()
            await _publish(settings, NOTIFIER_QUEUE.name, body, "x")
            parked = await _parked(settings, NOTIFIER_QUEUE.name, len(poisoned))
        assert sorted(m.message_id or "" for m in parked) == sorted(
            intros[n]["message_id"] for n in poisoned
        )
        reasons = {m.message_id: str(m.headers[REASON_HEADER]) for m in parked}
        assert "data.participants: too_long" in reasons[intros[17]["message_id"]]
        assert "SQLSTATE 23514" in reasons[intros[60]["message_id"]]
        expected = {uuid.UUID(i["data"]["proposal_id"]) for i in intros} - {
            uuid.UUID(intros[n]["data"]["proposal_id"]) for n in poisoned
        }

        async def recorded() -> set[uuid.UUID] | None:
            rows = await pool.fetch(
                "SELECT id FROM notifier.intros WHERE id = ANY($1::uuid[])",
                [uuid.UUID(i["data"]["proposal_id"]) for i in intros],
            )
            found = {r["id"] for r in rows}
            return found if found >= expected else None

        assert await _until(recorded) == expected
        name = await pool.fetchval(
            "SELECT intro -> 'participants' -> 0 ->> 'name' FROM notifier.intros WHERE id = $1",
            uuid.UUID(intros[30]["data"]["proposal_id"]),
        )
        assert name == "Nul \ufffd Name"
    finally:
        await broker.stop()
