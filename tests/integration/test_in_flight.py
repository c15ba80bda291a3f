"""Never twice (services/notifier/in_flight.py) against the real PostgreSQL, a real SMTP server
and the fake providers: every attempt is recorded in flight before its provider is called; a
result write that fails resends nothing; what a crash leaves in flight is reconciled per
channel, never blindly resent. A crash is the worker stopped dead by an exception no handler
catches, right after its providers accepted, before the result is written; a restart is a new
worker on the same database, with nothing in memory."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from services.notifier.channel_registry import build_channels, http_session
from services.notifier.deliveries import DeliveryWorker, RetryPolicy
from services.notifier.in_flight import UnkeyedPolicy
from services.notifier.links import LinkKeyring, LinkMaker
from services.notifier.planning import QuietHours
from services.notifier.proposals import ProposalIntake
from services.notifier.rate_limit import RateLimiter
from services.notifier.rendering import MessageRenderer
from services.notifier.smtp import SmtpSender
from services.notifier.store.deliveries import DeliveryStore
from services.notifier.store.uow import NotifierStore
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
from tests.support.clock import FakeClock
from tests.support.fake_providers import MATRIX_TOKEN, ProviderServer, Received, fake_providers
from tests.support.infra import WEBHOOK_SIGNING_KEY
from tests.support.smtp_sink import SmtpSink, smtp_sink

BOUND = 60.0  # ROAC_DELIVERY_IN_FLIGHT_SECONDS in these tests
SECRET = b"in-flight-test-secret-0123456789abcdef"
# In the past (the store's `untried` compares with the database's clock), after the other
# tests' NOON.
START = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)


class Crash(BaseException):
    """The process dying: nothing catches it, nothing after it runs."""


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


class Process:
    """One notifier process's intake and worker (what a restart replaces)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        sink: SmtpSink,
        clock: FakeClock,
        *,
        unkeyed: UnkeyedPolicy = UnkeyedPolicy.RESEND_ONCE,
        result_retry_seconds: float = 5.0,
    ) -> None:
        configured = settings.model_copy(
            update={"smtp_port": sink.port, "webhook_allowed_hosts": "127.0.0.1"}
        )
        store = NotifierStore(pool)
        quiet = QuietHours(enabled=False, start=21, end=8, fallback_timezone="UTC")
        self.worker = DeliveryWorker(
            store,
            build_channels(configured, http_session(configured), SmtpSender(configured)),
            MessageRenderer(),
            LinkMaker("http://roac.test", LinkKeyring.single(SECRET)),
            retry=RetryPolicy(max_attempts=3, base_seconds=5, max_delay_seconds=600),
            quiet=quiet,
            limiter=RateLimiter(100.0),
            clock=clock,
            rng=random.Random(1),
            in_flight_seconds=BOUND,
            unkeyed=unkeyed,
            result_retry_seconds=result_retry_seconds,
        )
        self.intake = ProposalIntake(
            store,
            double_opt_in=False,
            ask_ttl=timedelta(hours=72),
            quiet=quiet,
            clock=clock,
            deliver=self.worker.deliver_now,
        )

    async def receive(self, proposal: IntroProposed) -> None:
        """The proposal's message arrives (again, after a crash: RabbitMQ redelivers it)."""
        await self.intake.apply(EventBatch(events=[proposal]))


def _person(run: str, i: int, channel: ChannelType, address: str) -> Participant:
    return Participant(
        source="t",
        external_id=f"{run}-{i}",
        name=f"Person {i}",
        timezone="UTC",
        channels=[ChannelAddress(type=channel, address=address)],
    )


def _proposal(*people: Participant) -> IntroProposed:
    return IntroProposed(
        source="matcher",
        correlation_id="in-flight",
        data=IntroData(
            proposal_id=uuid.uuid4(),
            participants=list(people),
            topics=[IntroTopic(topic="kites", relation=TopicRelation.SHARED)],
            score=2.0,
            reason="r",
        ),
    )


def _failing_result_writes(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, times: int | None = None
) -> list[int]:
    """Make the store's result write (`mark_sent`) raise `error`, `times` times (None: until
    undone); returns the list of calls that raised."""
    real = DeliveryStore.mark_sent
    raised: list[int] = []

    async def mark_sent(self: DeliveryStore, *args: Any, **kwargs: Any) -> dict[Any, str]:
        if times is None or len(raised) < times:
            raised.append(1)
            raise error
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(DeliveryStore, "mark_sent", mark_sent)
    return raised


async def _delivery(pool: asyncpg.Pool, external_id: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT id, status, attempts, resends, in_flight_token, in_flight_key, in_flight_since "
        "FROM notifier.deliveries WHERE recipient_external_id = $1",
        external_id,
    )
    assert row is not None
    return row


async def _outcomes(pool: asyncpg.Pool, external_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT a.outcome FROM notifier.delivery_attempts a "
        "JOIN notifier.deliveries d ON d.id = a.delivery_id "
        "WHERE d.recipient_external_id = $1 ORDER BY a.attempt",
        external_id,
    )
    return [r["outcome"] for r in rows]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_result_write_that_fails_once_resends_nothing(
    pool: asyncpg.Pool,
    settings: Settings,
    sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = uuid.uuid4().hex[:8]
    process = Process(pool, settings, sink, FakeClock(START))
    people = [_person(run, i, ChannelType.EMAIL, f"p{i}.{run}@example.org") for i in range(2)]
    raised = _failing_result_writes(
        monkeypatch, asyncpg.PostgresConnectionError("connection lost at commit"), times=1
    )
    await process.receive(_proposal(*people))
    assert raised == [1]
    for i in range(2):
        assert len(sink.to(f"p{i}.{run}@example.org")) == 1  # the provider got it exactly once
        row = await _delivery(pool, f"{run}-{i}")
        assert (row["status"], row["attempts"], row["in_flight_token"]) == ("sent", 1, None)
        assert await _outcomes(pool, f"{run}-{i}") == ["sent"]


async def test_results_held_through_a_long_outage_are_recorded_not_resent(
    pool: asyncpg.Pool,
    settings: Settings,
    sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = uuid.uuid4().hex[:8]
    process = Process(pool, settings, sink, FakeClock(START), result_retry_seconds=0.3)
    people = [_person(run, i, ChannelType.EMAIL, f"p{i}.{run}@example.org") for i in range(2)]
    proposal = _proposal(*people)
    _failing_result_writes(monkeypatch, asyncpg.CannotConnectNowError("starting up"))
    # The database stays away longer than the worker retries the write: the message fails
    # (to be redelivered), the deliveries stay in flight, their results held in memory.
    with pytest.raises(TransientError):
        await process.receive(proposal)
    row = await _delivery(pool, f"{run}-0")
    assert row["status"] == "pending" and row["in_flight_token"] is not None
    assert row["in_flight_key"] == f"{row['id']}.0"
    monkeypatch.undo()
    recorded = _metric(
        "roac_notifier_in_flight_reconciled_total", channel="email", action="recorded"
    )
    # The database is back and the proposal redelivered: the held results are written.
    await process.receive(proposal)
    for i in range(2):
        assert len(sink.to(f"p{i}.{run}@example.org")) == 1
        row = await _delivery(pool, f"{run}-{i}")
        assert (row["status"], row["in_flight_token"]) == ("sent", None)
        assert await _outcomes(pool, f"{run}-{i}") == ["sent"]
    assert (
        _metric("roac_notifier_in_flight_reconciled_total", channel="email", action="recorded")
        == recorded + 2
    )


async def test_an_orphaned_webhook_is_resent_with_the_same_webhook_id_after_a_restart(
    pool: asyncpg.Pool,
    settings: Settings,
    sink: SmtpSink,
    providers: ProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = uuid.uuid4().hex[:8]
    clock = FakeClock(START)
    hook = f"/hook/{run}"
    mail = f"p1.{run}@example.org"
    proposal = _proposal(
        _person(run, 0, ChannelType.WEBHOOK, providers.url + hook),
        _person(run, 1, ChannelType.EMAIL, mail),
    )
    _failing_result_writes(monkeypatch, Crash())
    with pytest.raises(Crash):
        await Process(pool, settings, sink, clock).receive(proposal)
    monkeypatch.undo()
    [first] = providers.state.at(hook)
    assert len(sink.to(mail)) == 1
    orphan = await _delivery(pool, f"{run}-0")
    assert orphan["status"] == "pending" and orphan["in_flight_since"] == START

    restarted = Process(pool, settings, sink, clock)
    # Young: the sender may still be alive (another notifier): neither the redelivered
    # proposal nor the sweep touches it.
    await restarted.receive(proposal)
    assert await restarted.worker.reconcile_in_flight() == 0
    assert len(providers.state.at(hook)) == 1 and len(sink.to(mail)) == 1

    possible = _metric("roac_notifier_possible_duplicates_total", channel="email")
    clock.advance(BOUND + 1)
    assert await restarted.worker.reconcile_in_flight() >= 2
    resent = providers.state.at(hook)
    assert [r.provider for r in resent] == ["webhook", "webhook-repeat"]
    assert resent[1].headers["webhook-id"] == first.headers["webhook-id"] == orphan["in_flight_key"]
    # Email: once more under the same Message-ID, counted as a possible duplicate.
    mails = sink.to(mail)
    assert len(mails) == 2 and mails[0].message_id == mails[1].message_id
    assert _metric("roac_notifier_possible_duplicates_total", channel="email") == possible + 1
    for i in range(2):
        row = await _delivery(pool, f"{run}-{i}")
        assert (row["status"], row["attempts"], row["resends"]) == ("sent", 2, 1)
        assert row["in_flight_token"] is None
        assert await _outcomes(pool, f"{run}-{i}") == ["unknown", "sent"]
    # Nothing left in flight: the next pass finds nothing of this run, nothing is sent again.
    await restarted.worker.reconcile_in_flight()
    assert len(providers.state.at(hook)) == 2 and len(sink.to(mail)) == 2


async def test_an_orphaned_matrix_message_is_resent_with_the_same_transaction_id(
    pool: asyncpg.Pool,
    settings: Settings,
    sink: SmtpSink,
    providers: ProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = uuid.uuid4().hex[:8]
    clock = FakeClock(START)
    matrix = settings.model_copy(
        update={
            "matrix_homeserver_url": f"{providers.url}/matrix",
            "matrix_access_token": SecretStr(MATRIX_TOKEN),
        }
    )
    rooms = [f"!{run}{i}:example.org" for i in range(2)]
    proposal = _proposal(*(_person(run, i, ChannelType.MATRIX, r) for i, r in enumerate(rooms)))

    def events() -> list[list[Received]]:
        """The events the homeserver holds, per room (a repeated transaction id adds none)."""
        return [
            [r for r in providers.state.received if r.provider == "matrix" and room in r.path]
            for room in rooms
        ]

    _failing_result_writes(monkeypatch, Crash())
    with pytest.raises(Crash):
        await Process(pool, matrix, sink, clock).receive(proposal)
    monkeypatch.undo()
    orphans = [await _delivery(pool, f"{run}-{i}") for i in range(2)]
    keys = [o["in_flight_key"] for o in orphans]
    for orphan, [event] in zip(orphans, events(), strict=True):
        assert orphan["status"] == "pending" and orphan["in_flight_since"] == START
        # The transaction id the homeserver saw is the key recorded in flight.
        assert event.path.endswith(f"/send/m.room.message/{orphan['in_flight_key']}")

    restarted = Process(pool, matrix, sink, clock)
    # Young: its sender may still be alive; nothing is resent yet.
    await restarted.receive(proposal)
    assert await restarted.worker.reconcile_in_flight() == 0
    assert [len(e) for e in events()] == [1, 1]

    resent = _metric("roac_notifier_in_flight_reconciled_total", channel="matrix", action="resent")
    possible = _metric("roac_notifier_possible_duplicates_total", channel="matrix")
    clock.advance(BOUND + 1)
    assert await restarted.worker.reconcile_in_flight() >= 2
    assert (
        _metric("roac_notifier_in_flight_reconciled_total", channel="matrix", action="resent")
        == resent + 2
    )
    # Resent under the same transaction id: the homeserver answered with the first event, so
    # each room holds one event; a new id would have made a second one.
    assert [len(e) for e in events()] == [1, 1]
    with providers.state.lock:
        transactions = {
            txn
            for txn in providers.state.matrix_events
            if txn.split(".")[0] in {str(o["id"]) for o in orphans}
        }
    assert transactions == set(keys)
    # Deduplicated by the receiver: not counted as a possible duplicate.
    assert _metric("roac_notifier_possible_duplicates_total", channel="matrix") == possible
    for i in range(2):
        row = await _delivery(pool, f"{run}-{i}")
        assert (row["status"], row["attempts"], row["resends"]) == ("sent", 2, 1)
        assert row["in_flight_token"] is None
        assert await _outcomes(pool, f"{run}-{i}") == ["unknown", "sent"]
    # Nothing left in flight: the next pass sends nothing of this run again.
    await restarted.worker.reconcile_in_flight()
    assert [len(e) for e in events()] == [1, 1]
    assert (
        _metric("roac_notifier_in_flight_reconciled_total", channel="matrix", action="resent")
        == resent + 2
    )


@pytest.mark.parametrize("policy", list(UnkeyedPolicy))
async def test_a_channel_without_a_key_is_resent_at_most_once(
    pool: asyncpg.Pool,
    settings: Settings,
    sink: SmtpSink,
    providers: ProviderServer,
    monkeypatch: pytest.MonkeyPatch,
    policy: UnkeyedPolicy,
) -> None:
    run = uuid.uuid4().hex[:8]
    clock = FakeClock(START)
    hooks = [f"/slack/services/T0/B0/{run}{i}" for i in range(2)]
    proposal = _proposal(
        *(
            _person(run, i, ChannelType.SLACK_WEBHOOK, providers.url + h)
            for i, h in enumerate(hooks)
        )
    )
    possible = _metric("roac_notifier_possible_duplicates_total", channel="slack_webhook")
    _failing_result_writes(monkeypatch, Crash())
    with pytest.raises(Crash):
        await Process(pool, settings, sink, clock, unkeyed=policy).receive(proposal)
    assert [len(providers.state.at(h)) for h in hooks] == [1, 1]

    # Restarted, and crashing again right after the resends.
    clock.advance(BOUND + 1)
    restarted = Process(pool, settings, sink, clock, unkeyed=policy)
    if policy is UnkeyedPolicy.RESEND_ONCE:
        with pytest.raises(Crash):
            await restarted.worker.reconcile_in_flight()
        assert [len(providers.state.at(h)) for h in hooks] == [2, 2]
        assert (
            _metric("roac_notifier_possible_duplicates_total", channel="slack_webhook")
            == possible + 2
        )
    monkeypatch.undo()

    # Restarted again: never a third copy (resend_once), never a second one (hold).
    clock.advance(BOUND + 1)
    again = Process(pool, settings, sink, clock, unkeyed=policy)
    await again.worker.reconcile_in_flight()
    copies = 2 if policy is UnkeyedPolicy.RESEND_ONCE else 1
    assert [len(providers.state.at(h)) for h in hooks] == [copies, copies]
    for i in range(2):
        row = await _delivery(pool, f"{run}-{i}")
        assert (row["status"], row["in_flight_token"]) == ("parked", None)
        assert await _outcomes(pool, f"{run}-{i}") == ["unknown"] * copies
    parked = await pool.fetch(
        "SELECT headers FROM messaging.outbox WHERE routing_key = 'roac.notifier.deliveries.dlq'"
    )
    assert len(parked) == 2
    assert all("outcome unknown" in r["headers"]["x-roac-reason"] for r in parked)
