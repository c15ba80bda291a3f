"""The notifier's service against the real PostgreSQL and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from services.notifier.rendering import IntroRenderer
from services.notifier.service import NotifierService
from services.notifier.smtp import SmtpSender
from services.notifier.store import NotifierStore
from shared.errors import TransientError
from shared.events import (
    ChannelAddress,
    ChannelType,
    EventBatch,
    IntroData,
    IntroProposed,
    IntroTopic,
    Participant,
    TopicRelation,
)
from shared.settings import Settings
from tests.support.infra import free_port
from tests.support.smtp_sink import SmtpSink, smtp_sink


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as created:
        yield created


def _service(pool: asyncpg.Pool, settings: Settings, smtp_port: int) -> NotifierService:
    smtp = settings.model_copy(update={"smtp_port": smtp_port})
    return NotifierService(NotifierStore(pool), IntroRenderer(), SmtpSender(smtp), smtp.smtp_from)


def _intro(run: str, *, channels: bool = True) -> IntroProposed:
    def person(i: int) -> Participant:
        return Participant(
            source="t",
            external_id=f"{run}-{i}",
            name=f"Person {i}",
            channels=[ChannelAddress(type=ChannelType.EMAIL, address=f"p{i}.{run}@example.org")]
            if channels or i == 0
            else [],
        )

    return IntroProposed(
        source="matcher",
        correlation_id=f"c-{run}",
        data=IntroData(
            proposal_id=uuid.uuid4(),
            participants=[person(0), person(1)],
            topics=[IntroTopic(topic=f"topic {run}", relation=TopicRelation.SHARED)],
            score=2.0,
            reason="You both care about it.",
        ),
    )


async def _outbox_types(pool: asyncpg.Pool, run: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT routing_key FROM messaging.outbox "
        "WHERE producer = 'notifier' AND correlation_id = $1",
        f"c-{run}",
    )
    return sorted(r["routing_key"] for r in rows)


async def test_each_participant_gets_one_email_however_often_the_proposal_arrives(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:8]
    service = _service(pool, settings, sink.port)
    batch = EventBatch(events=[_intro(run)])
    await service.apply(batch)
    await service.apply(batch)
    await asyncio.gather(service.apply(batch), service.apply(batch))  # concurrent copies too
    for i in range(2):
        [mail] = sink.to(f"p{i}.{run}@example.org")
        assert f"Person {1 - i}" in mail.text
    assert await _outbox_types(pool, run) == ["delivery.succeeded.v1"] * 2


async def test_a_refused_address_fails_permanently_without_retry(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:8]
    sink.handler.refuse.add(f"p1.{run}@example.org")
    service = _service(pool, settings, sink.port)
    await service.apply(EventBatch(events=[_intro(run)]))
    await service.apply(EventBatch(events=[_intro(run)]))  # another proposal, same people
    assert len(sink.to(f"p0.{run}@example.org")) == 2
    assert sink.to(f"p1.{run}@example.org") == []
    assert (
        await _outbox_types(pool, run) == ["delivery.failed.v1"] * 2 + ["delivery.succeeded.v1"] * 2
    )
    row = await pool.fetchrow(
        "SELECT status, last_error FROM notifier.deliveries "
        "WHERE recipient_external_id = $1 LIMIT 1",
        f"{run}-1",
    )
    assert row["status"] == "failed" and "550" in row["last_error"]


async def test_a_participant_without_an_email_channel_is_a_permanent_failure(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:8]
    await _service(pool, settings, sink.port).apply(
        EventBatch(events=[_intro(run, channels=False)])
    )
    rows = await pool.fetch(
        "SELECT body FROM messaging.outbox WHERE producer = 'notifier' AND correlation_id = $1 "
        "AND routing_key = 'delivery.failed.v1'",
        f"c-{run}",
    )
    [event] = json.loads(rows[0]["body"])["events"]
    assert event["data"]["permanent"] is True and "no email channel" in event["data"]["reason"]


async def test_an_unreachable_smtp_server_is_transient_and_records_nothing(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    service = _service(pool, settings, free_port())  # nothing listens there
    with pytest.raises(TransientError):
        await service.apply(EventBatch(events=[_intro(run)]))
    statuses = await pool.fetch(
        "SELECT status FROM notifier.deliveries WHERE recipient_external_id LIKE $1", f"{run}-%"
    )
    assert statuses == []  # rolled back: the retry starts from scratch
    assert await _outbox_types(pool, run) == []
