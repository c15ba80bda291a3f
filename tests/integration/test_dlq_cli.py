"""`roac dlq list` and `roac dlq replay` as an operator runs them (`python -m services.cli dlq`),
on messages the real services parked, consumed again by the real services after the replay.

For each parking queue: the service (a separate process, `python -m services.cli <service>`)
parks a message for a reason an operator can remove; `roac dlq list` shows its message id and
reason and nothing of its body (names, addresses, topics, external ids: personal data); the
operator removes the cause; `roac dlq replay` sends it back once, a second replay finds nothing,
and the service applies it once (a row, an event, a copy of an email).

- matcher, notifier: a message of two events of which PostgreSQL refuses one (a check this test
  adds and drops) is split by shared/consumer.py; the refused event is parked alone, with
  `x-roac-reason` and `x-roac-queue`.
- deliveries: asks whose SMTP server is unreachable run out of attempts and are parked by the
  notifier; replayed once the server answers, each person receives exactly one copy.
- ingress: a message over ROAC_INGEST_MAX_INTERESTS_PER_PERSON is parked by ingest; replayed
  once the limit is raised, its events are published once.

A vhost and a database of their own: the replayed events must not reach queues that other
integration tests of the session consume."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import TypeVar

import aio_pika
import asyncpg
import pytest

from services.database import migrate
from shared.db import create_pool
from shared.events import (
    ChannelAddress,
    ChannelType,
    InterestData,
    InterestDeclared,
    IntroData,
    IntroProposed,
    IntroTopic,
    Participant,
    TopicRelation,
    encode_batch,
)
from shared.topology import (
    DELIVERY_QUEUE,
    INGRESS_EXCHANGE,
    INGRESS_QUEUE,
    MATCHER_QUEUE,
    NOTIFIER_QUEUE,
    QUEUE_HEADER,
)
from tests.support.amqp import connect, drain, tap
from tests.support.infra import Infra, free_port, isolated_infra
from tests.support.processes import ServiceProcess, run_roac
from tests.support.refusals import refused_rows
from tests.support.smtp_sink import SmtpSink, smtp_sink

T = TypeVar("T")

# The variable naming the port each service's /readyz answers on.
_READY_PORT = {
    "matcher": "ROAC_MATCHER_PORT",
    "notifier": "ROAC_NOTIFIER_METRICS_PORT",
    "ingest": "ROAC_INGEST_PORT",
}


@dataclass
class Site:
    """The isolated vhost and database, an SMTP sink, and where the services' logs go."""

    infra: Infra
    sink: SmtpSink
    log_dir: Path
    started: count[int]

    def env(self, **overrides: str | int) -> dict[str, str]:
        # Quiet hours off: an ask must go out whatever the hour the test runs at.
        values: dict[str, str | int] = {
            "ROAC_SMTP_PORT": self.sink.port,
            "ROAC_QUIET_HOURS_ENABLED": "false",
            **overrides,
        }
        return self.infra.env(**values)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with isolated_infra("dlqcli") as infra, smtp_sink() as sink:
        asyncio.run(migrate(infra.settings()))
        yield Site(infra, sink, tmp_path_factory.mktemp("dlq-cli-logs"), count())


@pytest.fixture
async def db(site: Site) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(site.infra.settings(), max_size=3)
    yield pool
    await pool.close()


@contextmanager
def running(site: Site, name: str, **env: str | int) -> Iterator[ServiceProcess]:
    """One service as its own process until the block ends; its log is printed on a failure."""
    port = free_port()
    process = ServiceProcess(
        name,
        site.env(**{_READY_PORT[name]: port}, **env),
        f"http://127.0.0.1:{port}/readyz",
        site.log_dir,
        label=f"{name}-{next(site.started)}",
    )
    process.start()
    try:
        yield process
    except BaseException:
        print(f"\n----- {name} log (last lines) -----\n{process.tail(60)}")
        raise
    finally:
        process.stop()


async def roac(site: Site, *args: str) -> str:
    """`roac ARGS` in a process of its own, as an operator types it; it must succeed."""
    done = await asyncio.to_thread(run_roac, site.env(), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def listed(site: Site, queue: str, *message_ids: str, within: float = 30.0) -> str:
    """`roac dlq list QUEUE`, once every one of `message_ids` is in it (parking takes a moment)."""
    deadline = time.monotonic() + within
    while True:
        out = await roac(site, "dlq", "list", queue)
        if all(m in out for m in message_ids) or time.monotonic() > deadline:
            assert all(m in out for m in message_ids), out
            return out
        await asyncio.sleep(0.3)


def line_of(out: str, message_id: str) -> str:
    [line] = [line for line in out.splitlines() if message_id in line]
    return line


async def replay_once(site: Site, queue: str, *message_ids: str) -> None:
    """The replay names each message and counts it; a second one finds nothing; nothing is left
    parked."""
    out = await roac(site, "dlq", "replay", queue, "--limit", "10")
    for message_id in message_ids:
        assert message_id in out, out
    assert f": replayed {len(message_ids)}, already done 0, left (no origin known) 0" in out, out
    again = await roac(site, "dlq", "replay", queue)
    assert again.strip().endswith(": replayed 0, already done 0, left (no origin known) 0"), again
    assert (await roac(site, "dlq", "list", queue)).strip() == "0 parked"


async def parked_headers(site: Site, parking_queue: str, message_id: str) -> dict[str, object]:
    """The headers of a parked message, read and handed back (the channel closed, unacked)."""
    connection = await connect(site.infra.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(parking_queue, passive=True)
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            if message.message_id == message_id:
                return dict(message.headers or {})
    raise AssertionError(f"{message_id} is not in {parking_queue}")


async def publish(
    site: Site,
    body: bytes,
    *,
    message_id: str,
    exchange: str = "",
    routing_key: str,
    type_: str | None = None,
) -> None:
    """Published with a confirm, as a producer past ingest's validation would."""
    connection = await connect(site.infra.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        await target.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                type=type_,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )


async def settled(check: Callable[[], Awaitable[T]], within: float = 30.0) -> T:
    """`check()`'s first truthy answer, or its last one after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


# The matcher


def _interest(run: str, i: int, topic: str) -> InterestDeclared:
    return InterestDeclared(
        source="ingest",
        correlation_id=f"c-{run}-{i}",
        data=InterestData(source="crm", external_id=f"{run}-{i}", topic=topic),
    )


async def _interests(pool: asyncpg.Pool, topic: str) -> int:
    found: int = await pool.fetchval(
        "SELECT count(*) FROM matcher.interests i JOIN matcher.topics t ON t.id = i.topic_id "
        "WHERE t.name = $1",
        topic,
    )
    return found


async def test_a_matcher_event_the_database_refused_is_listed_and_replayed_once(
    site: Site, db: asyncpg.Pool
) -> None:
    run = uuid.uuid4().hex[:8]
    kept, refused_topic = f"kept {run}", f"refused {run}"
    good, bad = _interest(run, 0, kept), _interest(run, 1, refused_topic)
    with running(site, "matcher"):
        async with refused_rows(db, "matcher.topics", "name", refused_topic):
            await publish(
                site,
                encode_batch([good, bad]),
                message_id=str(uuid.uuid4()),
                routing_key=MATCHER_QUEUE.name,
                type_="interest.declared.v1",
            )
            out = await listed(site, "matcher", str(bad.message_id))
        line = line_of(out, str(bad.message_id))
        assert line.startswith(f"{MATCHER_QUEUE.dead_letter_queue}  {bad.message_id}  ")
        assert "interest.declared.v1" in line
        assert "reason=" in line and "CheckViolationError (SQLSTATE 23514)" in line
        assert out.strip().endswith("1 parked")  # the other event was applied, not parked
        for personal in (f"{run}-1", refused_topic, f"{run}-0", kept):
            assert personal not in out
        assert await _interests(db, kept) == 1
        # Parked alone by the consumer's split, which names the queue it came from.
        headers = await parked_headers(site, MATCHER_QUEUE.dead_letter_queue, str(bad.message_id))
        assert headers[QUEUE_HEADER] == MATCHER_QUEUE.name

        await replay_once(site, "matcher", str(bad.message_id))

        async def applied() -> int:
            return await _interests(db, refused_topic)

        assert await settled(applied) == 1
        await asyncio.sleep(1.0)  # nothing else comes
        assert await _interests(db, refused_topic) == 1
        inbox = await db.fetchval(
            "SELECT count(*) FROM messaging.inbox WHERE message_id = $1", bad.message_id
        )
        assert inbox == 1


# The notifier


def _introduction(run: str, first: int, correlation_id: str) -> IntroProposed:
    people = [
        Participant(
            source="t",
            external_id=f"{run}-{i}",
            name=f"Person {i} {run}",
            timezone="UTC",
            channels=[ChannelAddress(type=ChannelType.EMAIL, address=f"p{i}.{run}@example.org")],
        )
        for i in (first, first + 1)
    ]
    return IntroProposed(
        source="matcher",
        correlation_id=correlation_id,
        data=IntroData(
            proposal_id=uuid.uuid4(),
            participants=people,
            topics=[IntroTopic(topic="kites", relation=TopicRelation.SHARED)],
            score=1.0,
            reason="r",
        ),
    )


def _personal_data(intro: IntroProposed) -> list[str]:
    found = []
    for person in intro.data.participants:
        found += [person.name, person.external_id, *(c.address for c in person.channels)]
    return found


async def _copies(sink: SmtpSink, intro: IntroProposed, within: float = 20.0) -> list[int]:
    """How many emails each participant received, once each has one (or `within` passed),
    then after a quiet second (a second copy would come right after the first)."""
    addresses = [c.address for p in intro.data.participants for c in p.channels]
    for address in addresses:
        await asyncio.to_thread(sink.wait_for, address, 1, within)
    await asyncio.sleep(1.0)
    return [len(sink.to(address)) for address in addresses]


async def test_a_notifier_introduction_the_database_refused_is_listed_and_replayed_once(
    site: Site, db: asyncpg.Pool
) -> None:
    run = uuid.uuid4().hex[:8]
    good = _introduction(run, 0, f"c-{run}")
    bad = _introduction(run, 2, f"c-{run}-refused")
    with running(site, "notifier"):
        async with refused_rows(db, "notifier.intros", "correlation_id", f"c-{run}-refused"):
            await publish(
                site,
                encode_batch([good, bad]),
                message_id=str(uuid.uuid4()),
                routing_key=NOTIFIER_QUEUE.name,
                type_="intro.proposed.v1",
            )
            out = await listed(site, "notifier", str(bad.message_id))
        line = line_of(out, str(bad.message_id))
        assert line.startswith(f"{NOTIFIER_QUEUE.dead_letter_queue}  {bad.message_id}  ")
        assert "reason=" in line and "SQLSTATE 23514" in line
        assert out.strip().endswith("1 parked")
        headers = await parked_headers(site, NOTIFIER_QUEUE.dead_letter_queue, str(bad.message_id))
        assert headers[QUEUE_HEADER] == NOTIFIER_QUEUE.name
        for personal in _personal_data(bad) + _personal_data(good):
            assert personal not in out
        assert await _copies(site.sink, good) == [1, 1]  # the other introduction's asks
        assert [len(site.sink.to(f"p{i}.{run}@example.org")) for i in (2, 3)] == [0, 0]

        await replay_once(site, "notifier", str(bad.message_id))

        # Recorded once, each of its people asked once.
        assert await _copies(site.sink, bad) == [1, 1]
        recorded = await db.fetchval(
            "SELECT count(*) FROM notifier.intros WHERE id = $1", bad.data.proposal_id
        )
        assert recorded == 1

        async def asked() -> list[str]:
            rows = await db.fetch(
                "SELECT status FROM notifier.deliveries WHERE proposal_id = $1",
                bad.data.proposal_id,
            )
            statuses = sorted(r["status"] for r in rows)
            return statuses if statuses == ["sent", "sent"] else []

        assert await settled(asked) == ["sent", "sent"]  # written right after the sends


# Deliveries


async def test_deliveries_out_of_attempts_are_listed_and_sent_exactly_once_after_a_replay(
    site: Site, db: asyncpg.Pool
) -> None:
    run = uuid.uuid4().hex[:8]
    intro = _introduction(run, 0, f"c-{run}")
    nowhere = free_port()  # an SMTP server that does not answer: a transient failure
    with running(site, "notifier", ROAC_SMTP_PORT=nowhere, ROAC_DELIVERY_MAX_ATTEMPTS=1):
        await publish(
            site,
            encode_batch([intro]),
            message_id=str(uuid.uuid4()),
            routing_key=NOTIFIER_QUEUE.name,
            type_="intro.proposed.v1",
        )

        async def both_parked() -> bool:
            statuses = await db.fetch(
                "SELECT status FROM notifier.deliveries WHERE proposal_id = $1",
                intro.data.proposal_id,
            )
            return [r["status"] for r in statuses] == ["parked", "parked"]

        assert await settled(both_parked)
        deadline = time.monotonic() + 30
        while True:
            out = await roac(site, "dlq", "list", "deliveries")
            if out.strip().endswith("2 parked") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    lines = [line for line in out.splitlines() if line.startswith(DELIVERY_QUEUE.dead_letter_queue)]
    assert len(lines) == 2, out
    job_ids = [line.split("  ")[1] for line in lines]
    assert all(uuid.UUID(job_id) for job_id in job_ids)
    assert all("reason=gave up after 1 attempts: " in line for line in lines), lines
    for personal in _personal_data(intro):
        assert personal not in out
    assert await _copies(site.sink, intro, within=0.1) == [0, 0]

    # The operator fixes the SMTP settings, restarts the notifier and replays.
    with running(site, "notifier"):
        await replay_once(site, "deliveries", *job_ids)
        assert await _copies(site.sink, intro) == [1, 1]

        async def recorded() -> list[tuple[str, int]]:
            rows = await db.fetch(
                "SELECT status, attempts FROM notifier.deliveries WHERE proposal_id = $1",
                intro.data.proposal_id,
            )
            found = [(r["status"], r["attempts"]) for r in rows]
            return found if all(status == "sent" for status, _ in found) else []

        # The result is written right after the send.
        assert await settled(recorded) == [("sent", 1), ("sent", 1)]
        # Nothing in the replay's wake sends it again.
        await asyncio.sleep(2.0)
        assert await _copies(site.sink, intro, within=0.1) == [1, 1]


# The ingress


async def test_an_ingress_message_over_a_limit_is_listed_and_replayed_once(site: Site) -> None:
    run = uuid.uuid4().hex[:8]
    topics = [f"first {run}", f"second {run}"]
    body = json.dumps(
        {"items": [{"source": "crm", "external_id": f"{run}-0", "topic": t} for t in topics]}
    ).encode()
    message_id = f"interests-{run}"
    with running(site, "ingest", ROAC_INGEST_MAX_INTERESTS_PER_PERSON=1):
        await publish(
            site,
            body,
            message_id=message_id,
            exchange=INGRESS_EXCHANGE.name,
            routing_key="interests",
        )
        out = await listed(site, "ingress", message_id)
    line = line_of(out, message_id)
    assert line.startswith(f"{INGRESS_QUEUE.dead_letter_queue}  {message_id}  interests  ")
    assert "reason=" in line and line.split("reason=")[1].strip()
    for personal in (f"{run}-0", *topics):
        assert personal not in out

    # The operator raises the limit (the default), restarts ingest and replays.
    with running(site, "ingest"):
        connection = await connect(site.infra.amqp_url)
        async with connection:
            observed = await tap(connection, "interest.declared.v1")
            await replay_once(site, "ingress", message_id)
            events = [
                e for m in await drain(observed, settle=3.0) for e in json.loads(m.body)["events"]
            ]
    assert sorted(e["data"]["topic"] for e in events) == sorted(topics)
    assert {e["data"]["external_id"] for e in events} == {f"{run}-0"}
    assert (await roac(site, "dlq", "list", "ingress")).strip() == "0 parked"
