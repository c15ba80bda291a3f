"""The notifier's use cases against the real PostgreSQL, a real SMTP server and the fake
providers, with a clock the tests move. Jobs the notifier queues in its outbox are handed to the
worker by the test (the broker's part, retries through delay queues included, is in tests/e2e)."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.notifier.answers import Answers, Outcome
from services.notifier.channel_registry import build_channels, http_session
from services.notifier.deliveries import DeliveryWorker, RetryPolicy
from services.notifier.links import LinkAction, LinkKeyring, LinkMaker
from services.notifier.planning import QuietHours
from services.notifier.proposals import ProposalIntake
from services.notifier.rate_limit import RateLimiter
from services.notifier.rendering import MessageRenderer
from services.notifier.smtp import SmtpSender
from services.notifier.store.uow import NotifierStore
from shared.events import (
    ChannelAddress,
    ChannelType,
    ContactRef,
    EventBatch,
    IntroData,
    IntroProposed,
    IntroTopic,
    Participant,
    TopicRelation,
    decode_event,
)
from shared.settings import Settings
from tests.support.clock import FakeClock
from tests.support.fake_providers import ProviderServer, fake_providers
from tests.support.infra import WEBHOOK_SIGNING_KEY
from tests.support.smtp_sink import SmtpSink, smtp_sink

SECRET = b"notifier-test-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as created:
        yield created


@pytest.fixture(scope="module")
def providers() -> Iterator[ProviderServer]:
    with fake_providers(WEBHOOK_SIGNING_KEY.encode()) as created:
        yield created


@pytest.fixture(autouse=True)
async def no_jobs_left_from_other_tests(pool: asyncpg.Pool) -> None:
    await pool.execute("DELETE FROM messaging.outbox WHERE producer = 'notifier'")


@dataclass
class Notifier:
    intake: ProposalIntake
    worker: DeliveryWorker
    answers: Answers
    clock: FakeClock
    pool: asyncpg.Pool
    links: LinkMaker

    async def run_jobs(self, *, include_delayed: bool = False) -> list[str]:
        """Hand every queued job to the worker, as the broker would; return the routing keys of
        jobs left waiting in delay queues (handed over only with include_delayed)."""
        waiting: list[str] = []
        for _ in range(100):
            rows = await self.pool.fetch(
                "DELETE FROM messaging.outbox WHERE producer = 'notifier' "
                "AND (routing_key = 'delivery.requested.v1' "
                "     OR ($1 AND routing_key LIKE 'roac.notifier.delay.%')) "
                "RETURNING routing_key, body",
                include_delayed,
            )
            if not rows:
                break
            for row in rows:
                await self.worker.apply(EventBatch(events=[decode_event(row["body"])]))
        delayed = await self.pool.fetch(
            "SELECT routing_key FROM messaging.outbox WHERE producer = 'notifier' "
            "AND routing_key LIKE 'roac.notifier.delay.%'"
        )
        waiting += [r["routing_key"] for r in delayed]
        return waiting


def _notifier(
    pool: asyncpg.Pool,
    settings: Settings,
    sink: SmtpSink,
    *,
    double_opt_in: bool,
    start: datetime,
    quiet: bool = False,
    rate: float = 100.0,
) -> Notifier:
    clock = FakeClock(start)
    smtp = settings.model_copy(
        update={"smtp_port": sink.port, "webhook_allowed_hosts": "127.0.0.1"}
    )
    store = NotifierStore(pool)
    quiet_hours = QuietHours(enabled=quiet, start=21, end=8, fallback_timezone="UTC")
    links = LinkMaker("http://roac.test", LinkKeyring.single(SECRET))
    client = http_session(smtp)
    worker = DeliveryWorker(
        store,
        build_channels(
            smtp,
            client,
            SmtpSender(smtp),
        ),
        MessageRenderer(),
        links,
        retry=RetryPolicy(max_attempts=3, base_seconds=5, max_delay_seconds=600),
        quiet=quiet_hours,
        limiter=RateLimiter(rate),
        clock=clock,
        rng=random.Random(1),
    )
    intake = ProposalIntake(
        store,
        double_opt_in=double_opt_in,
        ask_ttl=timedelta(hours=72),
        quiet=quiet_hours,
        clock=clock,
        deliver=worker.deliver_now,
    )
    answers = Answers(
        store,
        keyring=LinkKeyring.single(SECRET),
        ask_ttl=timedelta(hours=72),
        quiet=quiet_hours,
        clock=clock,
    )
    return Notifier(intake, worker, answers, clock, pool, links)


def _person(
    run: str, i: int, channel: ChannelAddress | None = None, tz: str = "UTC"
) -> Participant:
    return Participant(
        source="t",
        external_id=f"{run}-{i}",
        name=f"Person {i}",
        timezone=tz,
        channels=[
            channel or ChannelAddress(type=ChannelType.EMAIL, address=f"p{i}.{run}@example.org")
        ],
    )


def _proposal(*people: Participant, seeker: int | None = None) -> IntroProposed:
    if seeker is None:
        topics = [IntroTopic(topic="kites", relation=TopicRelation.SHARED)]
    else:
        helper = 1 - seeker
        topics = [
            IntroTopic(
                topic="compliance",
                relation=TopicRelation.SEEKS_OFFERS,
                seeker=ContactRef(source="t", external_id=people[seeker].external_id),
                offerer=ContactRef(source="t", external_id=people[helper].external_id),
            )
        ]
    return IntroProposed(
        source="matcher",
        correlation_id="c",
        data=IntroData(
            proposal_id=uuid.uuid4(),
            participants=list(people),
            topics=topics,
            score=2.0,
            reason="r",
        ),
    )


def _answer_link(notifier: Notifier, proposal: IntroProposed, i: int, action: LinkAction) -> str:
    person = proposal.data.participants[i]
    url = notifier.links.answer(
        action,
        proposal.data.proposal_id,
        person.source,
        person.external_id,
        notifier.clock.now().timestamp() + 3600,
    )
    return url.rsplit("/", 1)[1]


NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


async def test_direct_mode_introduces_each_participant_once_however_often_it_arrives(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = _notifier(pool, settings, sink, double_opt_in=False, start=NOON)
    proposal = _proposal(_person(run, 0), _person(run, 1))
    for _ in range(3):
        await notifier.intake.apply(EventBatch(events=[proposal]))
    await notifier.run_jobs()
    await notifier.run_jobs()
    for i in range(2):
        [mail] = sink.to(f"p{i}.{run}@example.org")
        assert f"Person {1 - i}" in mail.text


async def test_double_opt_in_asks_then_introduces_once_everyone_said_yes(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = _notifier(pool, settings, sink, double_opt_in=True, start=NOON)
    proposal = _proposal(_person(run, 0), _person(run, 1))
    await notifier.intake.apply(EventBatch(events=[proposal]))
    await notifier.run_jobs()
    asks = [sink.to(f"p{i}.{run}@example.org") for i in range(2)]
    assert [len(a) for a in asks] == [1, 1]
    assert "Person 1" not in asks[0][0].text  # the ask names nobody
    result = await notifier.answers.answer(_answer_link(notifier, proposal, 0, LinkAction.ACCEPT))
    assert result.outcome is Outcome.ACCEPTED
    assert (
        await notifier.answers.answer(_answer_link(notifier, proposal, 0, LinkAction.ACCEPT))
    ).outcome is Outcome.REPEATED
    await notifier.run_jobs()
    assert len(sink.to(f"p0.{run}@example.org")) == 1  # no introduction yet
    await notifier.answers.answer(_answer_link(notifier, proposal, 1, LinkAction.ACCEPT))
    await notifier.run_jobs()
    for i in range(2):
        mails = sink.to(f"p{i}.{run}@example.org")
        assert len(mails) == 2 and f"Person {1 - i}" in mails[0].text  # newest first: the intro
    assert (
        await pool.fetchval(
            "SELECT state FROM notifier.intros WHERE id = $1", proposal.data.proposal_id
        )
        == "introduced"
    )


async def test_the_helper_is_asked_only_after_the_seeker_said_yes(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = _notifier(pool, settings, sink, double_opt_in=True, start=NOON)
    proposal = _proposal(_person(run, 0), _person(run, 1), seeker=1)
    await notifier.intake.apply(EventBatch(events=[proposal]))
    await notifier.run_jobs()
    assert sink.to(f"p0.{run}@example.org") == [] and len(sink.to(f"p1.{run}@example.org")) == 1
    await notifier.answers.answer(_answer_link(notifier, proposal, 1, LinkAction.ACCEPT))
    await notifier.run_jobs()
    [helper_ask] = sink.to(f"p0.{run}@example.org")
    assert "looking for help with compliance, which you offer" in helper_ask.text


async def test_a_decline_ends_it_and_an_unanswered_ask_expires(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = _notifier(pool, settings, sink, double_opt_in=True, start=NOON)
    declined, ignored = (
        _proposal(_person(run, 0), _person(run, 1)),
        _proposal(_person(run, 2), _person(run, 3)),
    )
    await notifier.intake.apply(EventBatch(events=[declined, ignored]))
    await notifier.run_jobs()
    await notifier.answers.answer(_answer_link(notifier, declined, 0, LinkAction.ACCEPT))
    assert (
        await notifier.answers.answer(_answer_link(notifier, declined, 1, LinkAction.DECLINE))
    ).outcome is Outcome.DECLINED
    assert (
        await notifier.answers.answer(_answer_link(notifier, declined, 1, LinkAction.ACCEPT))
    ).outcome is Outcome.CLOSED
    notifier.clock.advance(73 * 3600)
    assert await notifier.answers.expire_due() >= 1
    await notifier.run_jobs()
    assert [len(sink.to(f"p{i}.{run}@example.org")) for i in range(4)] == [1, 1, 1, 1]  # asks only
    states = {
        r["id"]: r["state"]
        for r in await pool.fetch(
            "SELECT id, state FROM notifier.intros WHERE id = ANY($1::uuid[])",
            [declined.data.proposal_id, ignored.data.proposal_id],
        )
    }
    assert states == {declined.data.proposal_id: "declined", ignored.data.proposal_id: "expired"}


async def test_unsubscribing_stops_everything_and_tells_the_matcher(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = _notifier(pool, settings, sink, double_opt_in=True, start=NOON)
    proposal = _proposal(_person(run, 0), _person(run, 1))
    await notifier.intake.apply(EventBatch(events=[proposal]))
    await notifier.run_jobs()
    person = proposal.data.participants[1]
    token = notifier.links.unsubscribe(
        person.source, person.external_id, notifier.clock.now().timestamp()
    ).rsplit("/", 1)[1]
    assert (await notifier.answers.answer(token)).outcome is Outcome.UNSUBSCRIBED
    assert (await notifier.answers.answer(token)).outcome is Outcome.REPEATED
    assert (
        await pool.fetchval(
            "SELECT state FROM notifier.intros WHERE id = $1", proposal.data.proposal_id
        )
        == "declined"
    )
    opted = await pool.fetch(
        "SELECT body FROM messaging.outbox WHERE routing_key = 'contact.opted_out.v1'"
    )
    assert any(json.loads(r["body"])["data"]["external_id"] == f"{run}-1" for r in opted)
    # A later proposal with that person sends nothing at all.
    later = _proposal(_person(run, 0), _person(run, 1))
    await notifier.intake.apply(EventBatch(events=[later]))
    await notifier.run_jobs()
    assert len(sink.to(f"p0.{run}@example.org")) == 1 and len(sink.to(f"p1.{run}@example.org")) == 1


async def test_quiet_hours_hold_a_message_until_local_morning(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink
) -> None:
    run = uuid.uuid4().hex[:8]
    late_evening_berlin = datetime(2026, 1, 15, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    notifier = _notifier(
        pool, settings, sink, double_opt_in=False, start=late_evening_berlin, quiet=True
    )
    proposal = _proposal(
        _person(run, 0, tz="Europe/Berlin"), _person(run, 1, tz="America/New_York")
    )
    await notifier.intake.apply(EventBatch(events=[proposal]))
    waiting = await notifier.run_jobs()
    # 17:30 in New York: sent; Berlin waits, its job going round the longest delay tier.
    assert sink.to(f"p0.{run}@example.org") == [] and len(sink.to(f"p1.{run}@example.org")) == 1
    assert waiting == ["roac.notifier.delay.3600s"]
    notifier.clock.set(datetime(2026, 1, 16, 6, 59, tzinfo=UTC))  # 07:59 in Berlin
    await notifier.run_jobs(include_delayed=True)
    assert sink.to(f"p0.{run}@example.org") == []
    notifier.clock.set(datetime(2026, 1, 16, 7, 0, tzinfo=UTC))  # 08:00
    await notifier.run_jobs(include_delayed=True)
    assert len(sink.to(f"p0.{run}@example.org")) == 1


async def test_one_webhook_is_paced_to_its_rate(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink, providers: ProviderServer
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = _notifier(pool, settings, sink, double_opt_in=False, start=NOON, rate=1.0)
    hook = f"/hook/{run}"
    webhook = ChannelAddress(type=ChannelType.WEBHOOK, address=providers.url + hook)
    proposals = [_proposal(_person(run, 2 * i, webhook), _person(run, 2 * i + 1)) for i in range(4)]
    await notifier.intake.apply(EventBatch(events=proposals))
    waiting = await notifier.run_jobs()
    # One per second to this webhook: the 2nd and 3rd wait in-process (1 s, 2 s), the 4th would
    # wait 3 s and goes through a delay queue instead of holding its group.
    assert notifier.clock.sleeps == [1.0, 2.0]
    assert len(providers.state.at(hook)) == 3
    assert waiting == ["roac.notifier.delay.1s"]
    notifier.clock.advance(3)
    await notifier.run_jobs(include_delayed=True)
    assert len(providers.state.at(hook)) == 4
    # Emails to the other participants are not paced by the webhook.
    assert all(len(sink.to(f"p{2 * i + 1}.{run}@example.org")) == 1 for i in range(4))


async def test_a_long_pacing_wait_goes_through_a_delay_queue(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink, providers: ProviderServer
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = _notifier(pool, settings, sink, double_opt_in=False, start=NOON, rate=0.2)
    hook = f"/hook/{run}"
    webhook = ChannelAddress(type=ChannelType.WEBHOOK, address=providers.url + hook)
    proposals = [_proposal(_person(run, 2 * i, webhook), _person(run, 2 * i + 1)) for i in range(2)]
    await notifier.intake.apply(EventBatch(events=proposals))
    # The second message would wait 5 s, more than is worth holding a worker for.
    assert await notifier.run_jobs() == ["roac.notifier.delay.5s"]
    assert notifier.clock.sleeps == [] and len(providers.state.at(hook)) == 1
    notifier.clock.advance(5)
    await notifier.run_jobs(include_delayed=True)
    assert len(providers.state.at(hook)) == 2


async def test_a_permanent_failure_falls_back_to_the_next_channel(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink, providers: ProviderServer
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = _notifier(pool, settings, sink, double_opt_in=False, start=NOON)
    hook = f"/hook/{run}"
    providers.state.script(hook, 404)
    person = Participant(
        source="t",
        external_id=f"{run}-0",
        name="Person 0",
        channels=[
            ChannelAddress(type=ChannelType.WEBHOOK, address=providers.url + hook),
            ChannelAddress(type=ChannelType.EMAIL, address=f"p0.{run}@example.org"),
        ],
    )
    await notifier.intake.apply(EventBatch(events=[_proposal(person, _person(run, 1))]))
    await notifier.run_jobs()
    assert len(providers.state.at(hook)) == 1
    assert len(sink.to(f"p0.{run}@example.org")) == 1
    attempts = await pool.fetch(
        "SELECT a.channel, a.outcome FROM notifier.delivery_attempts a "
        "JOIN notifier.deliveries d ON d.id = a.delivery_id "
        "WHERE d.recipient_external_id = $1 ORDER BY a.attempt",
        f"{run}-0",
    )
    assert [(a["channel"], a["outcome"]) for a in attempts] == [
        ("webhook", "permanent"),
        ("email", "sent"),
    ]


async def test_transient_failures_retry_with_backoff_then_park(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink, providers: ProviderServer
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = _notifier(pool, settings, sink, double_opt_in=False, start=NOON)
    hook = f"/hook/{run}"
    providers.state.script(hook, 503, 503, 503, 503)
    webhook = ChannelAddress(type=ChannelType.WEBHOOK, address=providers.url + hook)
    await notifier.intake.apply(
        EventBatch(events=[_proposal(_person(run, 0, webhook), _person(run, 1))])
    )
    assert await notifier.run_jobs() == ["roac.notifier.delay.1s"]  # ~5 s: round the 1 s tier
    notifier.clock.advance(10)
    assert await notifier.run_jobs(include_delayed=True) == ["roac.notifier.delay.5s"]  # ~15 s
    notifier.clock.advance(30)
    assert await notifier.run_jobs(include_delayed=True) == []
    row = await pool.fetchrow(
        "SELECT status, attempts FROM notifier.deliveries WHERE recipient_external_id = $1",
        f"{run}-0",
    )
    assert (row["status"], row["attempts"]) == ("parked", 3)
    parked = await pool.fetch(
        "SELECT headers FROM messaging.outbox WHERE routing_key = 'roac.notifier.deliveries.dlq'"
    )
    assert parked and any(
        "3 attempts" in (r["headers"] or {}).get("x-roac-reason", "") for r in parked
    )
    assert len(providers.state.at(hook)) == 3
