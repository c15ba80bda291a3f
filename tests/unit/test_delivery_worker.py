"""The delivery worker end to end on in-memory fakes (tests/unit/fakes_notifier.py): a job comes
due, the worker claims the row, asks the lifecycle (services/notifier/delivery_lifecycle.py),
sends through a scripted channel and writes what follows: the row, the next job (now, through a
delay queue, or parked), the delivery events and the introduction's change. The branches
tests/integration/test_notifier_service.py, test_in_flight.py and test_notifier_resources.py
cover against PostgreSQL and real providers, and the edge cases they don't."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from prometheus_client import REGISTRY

from services.notifier.channels.base import Channel, Outgoing, Sent
from services.notifier.deliveries import DeliveryWorker, RetryPolicy
from services.notifier.delivery_policy import PermanentDeliveryError, TransientDeliveryError
from services.notifier.in_flight import UnkeyedPolicy
from services.notifier.links import LinkKeyring, LinkMaker
from services.notifier.optin import IntroState
from services.notifier.planning import QuietHours
from services.notifier.rate_limit import RateLimiter
from services.notifier.rendering import MessageRenderer
from services.notifier.scheduling import JobCause
from services.notifier.store.rows import DeliveryRecord, IntroRecord
from shared.errors import TransientError
from shared.events import (
    ChannelAddress,
    ChannelType,
    DeliveryFailed,
    DeliveryKind,
    EventBatch,
    IntroData,
    IntroTopic,
    Participant,
    TopicRelation,
)
from tests.support.clock import FakeClock
from tests.unit.fakes_notifier import (
    PARKING,
    DeliveryWorld,
    FakeDeliveryStorage,
    ScriptedChannel,
)

NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SECRET = b"worker-unit-test-secret-0123456789abcdef"
EMAIL, WEBHOOK, SLACK_HOOK = ChannelType.EMAIL, ChannelType.WEBHOOK, ChannelType.SLACK_WEBHOOK
CAUSE = JobCause("c", None)
BOUND = 60.0  # ROAC_DELIVERY_IN_FLIGHT_SECONDS
# One renderer for every test: it compiles its templates once (about 0.1 s each time).
RENDERER = MessageRenderer()


def address(kind: ChannelType, i: int) -> ChannelAddress:
    where = f"p{i}@example.org" if kind is EMAIL else f"https://hooks.example.org/{kind}/{i}"
    return ChannelAddress(type=kind, address=where)


def person(i: int, *kinds: ChannelType, tz: str = "UTC") -> Participant:
    return Participant(
        source="t",
        external_id=f"p{i}",
        name=f"Person {i}",
        timezone=tz,
        channels=[address(k, i) for k in kinds or (EMAIL,)],
    )


def introduction(
    world: DeliveryWorld,
    first: Participant,
    *,
    kind: DeliveryKind = DeliveryKind.INTRO,
    state: IntroState = IntroState.ACCEPTED,
) -> DeliveryRecord:
    """An introduction of `first` and one other, and its delivery to `first` (position 0);
    the other's delivery is already sent."""
    intro_id = uuid4()
    data = IntroData(
        proposal_id=intro_id,
        participants=[first, person(9)],
        topics=[IntroTopic(topic="kites", relation=TopicRelation.SHARED)],
        score=2.0,
        reason="You both care about kites.",
    )
    world.intros[intro_id] = IntroRecord(
        intro_id, "direct", state, data, "c", NOON - timedelta(minutes=1), None
    )
    mine, theirs = (
        DeliveryRecord(
            id=uuid4(),
            proposal_id=intro_id,
            kind=kind,
            positions=(position,),
            recipient_source="t",
            recipient_external_id=p.external_id,
            channel=p.channels[0].type.value,
            channel_index=0,
            status=status,
            attempts=0,
            generation=0,
            not_before=NOON - timedelta(seconds=1),
        )
        for position, p, status in ((0, first, "pending"), (1, person(9), "sent"))
    )
    world.deliveries[mine.id] = mine
    world.deliveries[theirs.id] = theirs
    return mine


def worker(
    world: DeliveryWorld,
    channels: dict[ChannelType, Channel],
    clock: FakeClock,
    *,
    unkeyed: UnkeyedPolicy = UnkeyedPolicy.RESEND_ONCE,
    quiet: bool = False,
    rate: float = 100.0,
    result_retry_seconds: float = 0.0,
) -> DeliveryWorker:
    return DeliveryWorker(
        FakeDeliveryStorage(world),
        channels,
        RENDERER,
        LinkMaker("http://roac.test", LinkKeyring.single(SECRET)),
        retry=RetryPolicy(max_attempts=3, base_seconds=5, max_delay_seconds=600),
        quiet=QuietHours(enabled=quiet, start=21, end=8, fallback_timezone="UTC"),
        limiter=RateLimiter(rate),
        clock=clock,
        rng=random.Random(1),
        in_flight_seconds=BOUND,
        unkeyed=unkeyed,
        result_retry_seconds=result_retry_seconds,
    )


async def run_jobs(world: DeliveryWorld, w: DeliveryWorker, *, delayed: bool = False) -> None:
    """Hand every job queued for now (and, with `delayed`, in the delay queues) to the worker,
    one message each, as the broker would, until none is left."""
    for _ in range(20):
        queues = {q.queue for q in world.outbox if q.queue == "now" or delayed}
        jobs = world.take_jobs(*(q for q in queues if q not in ("event", PARKING)))
        if not jobs:
            return
        for job in jobs:
            await w.apply(EventBatch(events=[job]))


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass(frozen=True)
class Case:
    id: str
    first: Participant
    # What each channel answers (then: sent); only these channels are set up.
    script: dict[ChannelType, list[Sent | BaseException]]
    status: str
    # (channel, outcome) of each attempt of the delivery.
    attempts: list[tuple[str, str]]
    # The jobs that follow: "now", a delay queue's name, or the parking queue's.
    jobs: list[str] = field(default_factory=list)
    # The delivery events queued, by type.
    events: list[str] = field(default_factory=list)
    kind: DeliveryKind = DeliveryKind.INTRO
    # Changes to the world before the job comes due.
    arrange: Callable[[DeliveryWorld, DeliveryRecord], None] = lambda world, row: None
    intro_state: IntroState = IntroState.ACCEPTED
    # An attempt still in flight afterwards (someone else's send in progress).
    left_in_flight: bool = False
    quiet: bool = False
    unkeyed: UnkeyedPolicy = UnkeyedPolicy.RESEND_ONCE


def _earlier_attempts(n: int) -> Callable[[DeliveryWorld, DeliveryRecord], None]:
    def arrange(world: DeliveryWorld, row: DeliveryRecord) -> None:
        world.deliveries[row.id] = replace(row, attempts=n)

    return arrange


def _in_flight(
    seconds_ago: float, resends: int = 0
) -> Callable[[DeliveryWorld, DeliveryRecord], None]:
    """An earlier attempt recorded in flight `seconds_ago`, never finished."""

    def arrange(world: DeliveryWorld, row: DeliveryRecord) -> None:
        world.deliveries[row.id] = replace(
            row,
            in_flight_token=uuid4(),
            in_flight_since=NOON - timedelta(seconds=seconds_ago),
            resends=resends,
        )

    return arrange


def _opted_out(world: DeliveryWorld, row: DeliveryRecord) -> None:
    world.opted_out.add(("t", row.recipient_external_id))


SUCCEEDED, FAILED = "delivery.succeeded.v1", "delivery.failed.v1"

CASES = [
    Case("sent", person(0), {EMAIL: []}, "sent", [("email", "sent")], events=[SUCCEEDED]),
    Case(
        "a transient failure is retried after a backoff, through a delay queue",
        person(0, WEBHOOK),
        {WEBHOOK: [TransientDeliveryError("503")]},
        "pending",
        [("webhook", "transient")],
        jobs=["roac.notifier.delay.1s"],
    ),
    Case(
        "the provider's Retry-After lengthens the backoff",
        person(0, WEBHOOK),
        {WEBHOOK: [TransientDeliveryError("429", retry_after=60)]},
        "pending",
        [("webhook", "transient")],
        jobs=["roac.notifier.delay.30s"],  # the longest tier within 60 s
    ),
    Case(
        "a bug in a channel counts as a transient failure",
        person(0, WEBHOOK),
        {WEBHOOK: [KeyError("oops")]},
        "pending",
        [("webhook", "transient")],
        jobs=["roac.notifier.delay.1s"],
    ),
    Case(
        "the last attempt allowed fails transiently: parked",
        person(0, WEBHOOK),
        {WEBHOOK: [TransientDeliveryError("503")]},
        "parked",
        [("webhook", "transient")],
        jobs=[PARKING],
        events=[FAILED],
        arrange=_earlier_attempts(2),
    ),
    Case(
        "a permanent failure falls back to the next channel",
        person(0, WEBHOOK, EMAIL),
        {WEBHOOK: [PermanentDeliveryError("404")], EMAIL: []},
        "pending",
        [("webhook", "permanent")],
        jobs=["now"],
    ),
    Case(
        "a permanent failure on the last channel fails the delivery",
        person(0, WEBHOOK),
        {WEBHOOK: [PermanentDeliveryError("404")]},
        "failed",
        [("webhook", "permanent")],
        events=[FAILED],
    ),
    Case(
        "an ask that cannot be delivered fails its introduction",
        person(0, WEBHOOK),
        {WEBHOOK: [PermanentDeliveryError("404")]},
        "failed",
        [("webhook", "permanent")],
        events=[FAILED],
        kind=DeliveryKind.ASK,
        intro_state=IntroState.ASKED,
    ),
    Case(
        "a channel not set up is a refusal: the next channel",
        person(0, SLACK_HOOK, EMAIL),
        {EMAIL: []},
        "pending",
        [],
        jobs=["now"],
    ),
    Case(
        "opted out between the ask and the send: suppressed, nothing sent",
        person(0),
        {EMAIL: []},
        "suppressed",
        [],
        arrange=_opted_out,
    ),
    Case(
        "an introduction closed meanwhile cancels it",
        person(0),
        {EMAIL: []},
        "cancelled",
        [],
        kind=DeliveryKind.ASK,
        intro_state=IntroState.DECLINED,
    ),
    Case(
        "quiet hours at the recipient's place: later, through a delay queue",
        person(0, tz="Asia/Tokyo"),
        {EMAIL: []},
        "pending",
        [],
        jobs=["roac.notifier.delay.3600s"],  # 08:00 in Tokyo is 11 h away
        quiet=True,
    ),
    Case(
        "a young in-flight record is someone's send in progress: left alone",
        person(0),
        {EMAIL: []},
        "pending",
        [],
        arrange=_in_flight(5),
        left_in_flight=True,
    ),
    Case(
        "an orphaned webhook is resent under the same key",
        person(0, WEBHOOK),
        {WEBHOOK: []},
        "sent",
        [("webhook", "unknown"), ("webhook", "sent")],
        events=[SUCCEEDED],
        arrange=_in_flight(BOUND + 1),
    ),
    Case(
        "an orphaned email is resent once",
        person(0),
        {EMAIL: []},
        "sent",
        [("email", "unknown"), ("email", "sent")],
        events=[SUCCEEDED],
        arrange=_in_flight(BOUND + 1),
    ),
    Case(
        "an orphaned email resent before is parked, never a third copy",
        person(0),
        {EMAIL: []},
        "parked",
        [("email", "unknown")],
        jobs=[PARKING],
        events=[FAILED],
        arrange=_in_flight(BOUND + 1, resends=1),
    ),
    Case(
        "an orphaned send without a key, held by policy: parked",
        person(0, SLACK_HOOK),
        {SLACK_HOOK: []},
        "parked",
        [("slack_webhook", "unknown")],
        jobs=[PARKING],
        events=[FAILED],
        arrange=_in_flight(BOUND + 1),
        unkeyed=UnkeyedPolicy.HOLD,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_one_job(case: Case) -> None:
    world = DeliveryWorld()
    row = introduction(world, case.first, kind=case.kind, state=case.intro_state)
    case.arrange(world, row)
    channels = {kind: ScriptedChannel(*answers) for kind, answers in case.script.items()}
    w = worker(world, dict(channels), FakeClock(NOON), unkeyed=case.unkeyed, quiet=case.quiet)
    await w.deliver_now([(row.id, CAUSE)])
    after = world.deliveries[row.id]
    assert after.status == case.status
    assert world.outcomes(row.id) == case.attempts
    assert [q.queue for q in world.outbox if q.queue != "event"] == case.jobs
    assert [q.event.type for q in world.outbox if q.queue == "event"] == case.events
    # A message went out for each attempt made here (not for an earlier one settled unknown).
    sends = len([a for a in case.attempts if a[1] != "unknown"])
    assert sum(len(c.sent) for c in channels.values()) == sends
    assert (after.in_flight_token is not None) == case.left_in_flight


async def test_a_sent_message_carries_the_rows_key_and_the_event_its_recipient() -> None:
    world = DeliveryWorld()
    row = introduction(world, person(0))
    email = ScriptedChannel()
    await worker(world, {EMAIL: email}, FakeClock(NOON)).deliver_now([(row.id, CAUSE)])
    [out] = email.sent
    assert (out.address, out.idempotency_key) == ("p0@example.org", row.idempotency_key)
    [event] = world.events(SUCCEEDED)
    assert event.data.recipient.external_id == "p0"  # type: ignore[union-attr]
    # Every introduction sent: the introduction is delivered.
    assert world.intros[row.proposal_id].state is IntroState.INTRODUCED


async def test_an_undeliverable_ask_cancels_the_rest_of_its_introduction() -> None:
    world = DeliveryWorld()
    row = introduction(world, person(0, WEBHOOK), kind=DeliveryKind.ASK, state=IntroState.ASKED)
    other = next(d for d in world.deliveries.values() if d.id != row.id)
    world.deliveries[other.id] = replace(other, status="pending", kind=DeliveryKind.ASK)
    hook = ScriptedChannel(PermanentDeliveryError("404"))
    await worker(world, {WEBHOOK: hook}, FakeClock(NOON)).deliver_now([(row.id, CAUSE)])
    assert world.intros[row.proposal_id].state is IntroState.FAILED
    assert world.deliveries[other.id].status == "cancelled"
    [failed] = world.events(FAILED)
    assert isinstance(failed, DeliveryFailed) and failed.data.permanent


async def test_transient_failures_retry_with_backoff_then_park() -> None:
    world = DeliveryWorld()
    row = introduction(world, person(0, WEBHOOK))
    hook = ScriptedChannel(*(TransientDeliveryError("503") for _ in range(4)))
    clock = FakeClock(NOON)
    w = worker(world, {WEBHOOK: hook}, clock)
    await w.deliver_now([(row.id, CAUSE)])
    assert [q.queue for q in world.outbox] == ["roac.notifier.delay.1s"]  # ~5 s
    clock.advance(10)
    await run_jobs(world, w, delayed=True)
    assert [q.queue for q in world.outbox] == ["roac.notifier.delay.5s"]  # ~15 s
    clock.advance(30)
    await run_jobs(world, w, delayed=True)
    after = world.deliveries[row.id]
    assert (after.status, after.attempts, len(hook.sent)) == ("parked", 3, 3)
    [parked] = world.queued(PARKING)
    assert parked.headers and "gave up after 3 attempts" in parked.headers["x-roac-reason"]
    [failed] = world.events(FAILED)
    assert isinstance(failed, DeliveryFailed) and not failed.data.permanent


async def test_a_job_that_comes_back_early_waits_again() -> None:
    world = DeliveryWorld()
    row = introduction(world, person(0, WEBHOOK))
    hook = ScriptedChannel(TransientDeliveryError("503"))
    w = worker(world, {WEBHOOK: hook}, FakeClock(NOON))
    await w.deliver_now([(row.id, CAUSE)])
    await run_jobs(world, w, delayed=True)  # the clock has not moved: not due yet
    assert len(hook.sent) == 1 and world.deliveries[row.id].status == "pending"


async def test_a_permanent_failure_falls_back_and_the_next_channel_sends() -> None:
    world = DeliveryWorld()
    row = introduction(world, person(0, WEBHOOK, EMAIL))
    hook, email = ScriptedChannel(PermanentDeliveryError("404")), ScriptedChannel()
    w = worker(world, {WEBHOOK: hook, EMAIL: email}, FakeClock(NOON))
    await w.deliver_now([(row.id, CAUSE)])
    await run_jobs(world, w)
    assert world.outcomes(row.id) == [("webhook", "permanent"), ("email", "sent")]
    assert (len(hook.sent), len(email.sent)) == (1, 1)
    # Another channel is another message: another key.
    assert hook.sent[0].idempotency_key != email.sent[0].idempotency_key


async def test_a_repeated_or_stale_job_sends_nothing() -> None:
    world = DeliveryWorld()
    row = introduction(world, person(0))
    email = ScriptedChannel()
    w = worker(world, {EMAIL: email}, FakeClock(NOON))
    await w.deliver_now([(row.id, CAUSE), (row.id, CAUSE)])  # twice in one message
    await w.deliver_now([(row.id, CAUSE)])  # again, once sent
    await w.deliver_now([(uuid4(), CAUSE)])  # a delivery nobody knows
    assert len(email.sent) == 1 and len(world.events(SUCCEEDED)) == 1


async def test_opted_out_while_in_flight_keeps_suppressed_and_reports_nothing() -> None:
    world = DeliveryWorld()
    row = introduction(world, person(0))

    class OptOutDuringSend(ScriptedChannel):
        async def send(self, out: Outgoing) -> Sent:
            sent = await super().send(out)
            world.deliveries[row.id] = replace(world.deliveries[row.id], status="suppressed")
            return sent

    await worker(world, {EMAIL: OptOutDuringSend()}, FakeClock(NOON)).deliver_now([(row.id, CAUSE)])
    assert world.deliveries[row.id].status == "suppressed"
    assert world.outcomes(row.id) == [("email", "sent")]
    assert world.events(SUCCEEDED) == []


async def test_an_orphaned_unkeyed_send_is_resent_once_and_counted() -> None:
    world = DeliveryWorld()
    row = introduction(world, person(0, SLACK_HOOK))
    _in_flight(BOUND + 1)(world, row)
    hook = ScriptedChannel()
    labels = {"channel": "slack_webhook"}
    before = _sample("roac_notifier_possible_duplicates_total", labels)
    w = worker(world, {SLACK_HOOK: hook}, FakeClock(NOON))
    assert await w.reconcile_in_flight() == 1
    assert len(hook.sent) == 1 and world.deliveries[row.id].status == "sent"
    assert world.deliveries[row.id].resends == 1
    assert _sample("roac_notifier_possible_duplicates_total", labels) == before + 1


async def test_a_result_write_that_fails_once_is_retried_and_resends_nothing() -> None:
    world = DeliveryWorld(failing_result_writes=1)
    row = introduction(world, person(0))
    email = ScriptedChannel()
    w = worker(world, {EMAIL: email}, FakeClock(NOON), result_retry_seconds=5.0)
    await w.deliver_now([(row.id, CAUSE)])
    assert len(email.sent) == 1
    assert world.deliveries[row.id].status == "sent"
    assert world.outcomes(row.id) == [("email", "sent")]


async def test_results_held_through_an_outage_are_recorded_not_resent() -> None:
    world = DeliveryWorld(failing_result_writes=1)
    row = introduction(world, person(0))
    email = ScriptedChannel()
    clock = FakeClock(NOON)
    w = worker(world, {EMAIL: email}, clock, result_retry_seconds=0.0)
    with pytest.raises(TransientError):
        await w.deliver_now([(row.id, CAUSE)])
    # Rolled back: the row is still in flight, its result held in this process.
    assert world.deliveries[row.id].in_flight_token is not None
    assert await w.reconcile_in_flight() == 1
    assert len(email.sent) == 1
    assert world.deliveries[row.id].status == "sent"
    assert world.outcomes(row.id) == [("email", "sent")]


async def test_a_long_pacing_wait_goes_through_a_delay_queue() -> None:
    world = DeliveryWorld()
    rows = [introduction(world, person(i, WEBHOOK)) for i in range(2)]
    hook = ScriptedChannel(rate_key="one-endpoint")
    clock = FakeClock(NOON)
    w = worker(world, {WEBHOOK: hook}, clock, rate=0.2)  # one message per 5 s
    await w.deliver_now([(r.id, CAUSE) for r in rows])
    assert len(hook.sent) == 1 and clock.sleeps == []
    assert [q.queue for q in world.outbox if q.queue != "event"] == ["roac.notifier.delay.5s"]
    clock.advance(5)
    await run_jobs(world, w, delayed=True)
    assert len(hook.sent) == 2


async def test_a_refused_group_dm_falls_back_to_each_members_own_channel() -> None:
    world = DeliveryWorld()
    slack = [ChannelAddress(type=ChannelType.SLACK, address=f"U02{i}BE7LH") for i in range(2)]
    first = person(0).model_copy(update={"channels": [slack[0], address(EMAIL, 0)]})
    second = person(1).model_copy(update={"channels": [slack[1]]})
    row = introduction(world, first)
    intro = world.intros[row.proposal_id]
    data = intro.intro.model_copy(update={"participants": [first, second]})
    world.intros[intro.id] = replace(intro, intro=data)
    world.deliveries[row.id] = replace(row, positions=(0, 1), channel="slack")
    chat, email = ScriptedChannel(PermanentDeliveryError("not allowed")), ScriptedChannel()
    w = worker(world, {ChannelType.SLACK: chat, EMAIL: email}, FakeClock(NOON))
    await w.deliver_now([(row.id, CAUSE)])
    await run_jobs(world, w)
    assert world.deliveries[row.id].status == "failed"
    # The member with an email of their own gets it; the other has nothing left.
    assert [o.address for o in email.sent] == ["p0@example.org"]
