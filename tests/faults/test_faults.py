"""Each promise, tested by breaking something real mid-stream. The pass rule is the same for
every scenario (tests/faults/conftest.py): every accepted pair introduced, nobody introduced
twice, every service ready again within a minute."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest

from shared.events import DeliveryJobData, DeliveryRequested, encode_batch
from shared.topology import (
    CONSUMER_QUEUES,
    DELIVERY_QUEUE,
    INGRESS_CONTACTS,
    INGRESS_EXCHANGE,
    INGRESS_QUEUE,
    MATCHER_QUEUE,
    NOTIFIER_QUEUE,
    REASON_HEADER,
)
from tests.e2e.conftest import Stack, run_id
from tests.e2e.test_notifier_burst import PROPOSALS, _proposals
from tests.e2e.test_notifier_burst import _publish as _publish_proposals
from tests.faults.conftest import Workload, wait_ready
from tests.support.amqp import connect, drain, tap, wait_for_message
from tests.support.fake_providers import ProviderServer, fake_providers
from tests.support.infra import WEBHOOK_SIGNING_KEY
from tests.support.processes import ServiceProcess
from tests.support.tcp_proxy import tcp_proxy

pytestmark = pytest.mark.faults
POISON = b"\x00 not an event batch"  # neither JSON nor an event: no consumer can read it
REPORT = Path(__file__).resolve().parents[2] / ".roac" / "fault-report.jsonl"


def report(scenario: str, **figures: object) -> None:
    """What each scenario showed, for the release notes (and the closing note)."""
    REPORT.parent.mkdir(exist_ok=True)
    with REPORT.open("a") as out:
        out.write(json.dumps({"scenario": scenario, **figures}) + "\n")
    print(f"\n{scenario}: {figures}")


def _burst(workload: Workload, seconds: float) -> None:
    workload.run_in_background()
    time.sleep(seconds)


def restart_postgresql() -> None:
    """Restart the machine's PostgreSQL cluster, as an operator (or a crash and restart) would."""
    version = subprocess.run(
        ["ls", "/etc/postgresql"], capture_output=True, text=True
    ).stdout.split()[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        timeout=120,
    )


def test_rabbitmq_stopped_and_started_mid_stream(stack: Stack, workload: Workload) -> None:
    _burst(workload, 2)
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
    try:
        time.sleep(5)
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
    recovered = wait_ready(stack.processes)  # readiness includes "my consumers are back"
    time.sleep(3)
    workload.stop()
    report(
        "rabbitmq stop_app/start_app", ready_again_seconds=round(recovered, 1), **workload.check()
    )


def test_postgresql_restarted_mid_stream(stack: Stack, workload: Workload) -> None:
    _burst(workload, 2)
    restart_postgresql()
    recovered = wait_ready(stack.processes)
    time.sleep(3)
    workload.stop()
    report("postgresql restart", ready_again_seconds=round(recovered, 1), **workload.check())


def test_requests_during_a_postgresql_restart_get_202_or_503_never_500(stack: Stack) -> None:
    """An integration must be able to tell an outage (503 with Retry-After: retry) from a bug
    (500): with an Idempotency-Key (claimed in PostgreSQL) and without one (RabbitMQ only)."""
    statuses: Counter[tuple[bool, int]] = Counter()
    retry_after_missing = 0
    stop = threading.Event()

    def requests() -> None:
        nonlocal retry_after_missing
        run = run_id()
        with stack.client() as client:
            for i in range(100_000):
                if stop.is_set():
                    return
                keyed = i % 2 == 0
                person = {"source": "e2e", "external_id": f"pg-{run}-{i}", "name": f"P {i}"}
                headers = {"Idempotency-Key": f"pg-{run}-{i}"} if keyed else {}
                try:
                    answer = client.post("/v1/contacts", json=person, headers=headers)
                except httpx.TransportError:
                    continue  # not an answer at all: nothing to classify
                statuses[(keyed, answer.status_code)] += 1
                if answer.status_code == 503 and "retry-after" not in answer.headers:
                    retry_after_missing += 1

    worker = threading.Thread(target=requests, daemon=True)
    worker.start()
    time.sleep(1)
    restart_postgresql()
    recovered = wait_ready(stack.processes)
    time.sleep(1)
    stop.set()
    worker.join(timeout=30)
    report(
        "requests during a postgresql restart",
        ready_again_seconds=round(recovered, 1),
        **{f"{'keyed' if k else 'unkeyed'}_{code}": n for (k, code), n in sorted(statuses.items())},
    )
    assert {code for _, code in statuses} <= {202, 503}, statuses
    assert statuses[(True, 202)] and statuses[(False, 202)]  # both kinds were answered
    assert retry_after_missing == 0


@pytest.mark.parametrize("service", ["ingest", "matcher", "notifier"])
def test_each_service_killed_mid_burst(stack: Stack, workload: Workload, service: str) -> None:
    process: ServiceProcess = getattr(stack, service)
    _burst(workload, 2)
    process.kill()
    time.sleep(1)
    process.start()
    recovered = wait_ready(stack.processes)
    time.sleep(2)
    workload.stop()
    report(
        f"SIGKILL {service} mid-burst", ready_again_seconds=round(recovered, 1), **workload.check()
    )


@pytest.mark.parametrize("service", ["ingest", "matcher", "notifier"])
def test_each_service_stopped_gracefully_mid_burst(
    stack: Stack, workload: Workload, service: str
) -> None:
    process: ServiceProcess = getattr(stack, service)
    _burst(workload, 2)
    started = time.monotonic()
    try:
        code = process.stop()
        stopped_in = time.monotonic() - started
    finally:
        process.start()
    # A clean exit within the bound: in-flight work finished first (shared/shutdown.py).
    assert code == 0, process.tail(200)
    assert stopped_in < 30, process.tail(200)
    wait_ready(stack.processes)
    time.sleep(2)
    workload.stop()
    report(
        f"SIGTERM {service} mid-burst",
        exit_code=code,
        stopped_in_seconds=round(stopped_in, 1),
        **workload.check(),
    )


async def _publish_raw(url: str, routing_key: str, body: bytes, *, exchange: str = "") -> None:
    """Published as is, with a message id (the ingress requires one), persistent, confirmed."""
    connection = await connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = channel.default_exchange if not exchange else await channel.get_exchange(exchange)
        await target.publish(
            aio_pika.Message(
                body, message_id=str(uuid.uuid4()), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            ),
            routing_key=routing_key,
        )


async def _purge_dead_letter_queues(url: str) -> None:
    """Empty every dead-letter queue, so what this scenario finds there is its own. (Anything an
    earlier scenario parked failed that scenario already: its pair was never introduced.)"""
    connection = await connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in [*CONSUMER_QUEUES, INGRESS_QUEUE]:
            await (await channel.declare_queue(queue.dead_letter_queue, passive=True)).purge()


def test_a_duplicated_and_a_poison_message_on_every_queue(stack: Stack, workload: Workload) -> None:
    url = stack.infra.amqp_url
    asyncio.run(_purge_dead_letter_queues(url))

    async def capture() -> tuple[list[bytes], list[bytes]]:
        connection = await connect(url)
        async with connection:
            interests = await tap(connection, "interest.declared.v1")
            proposals = await tap(connection, "intro.proposed.v1")
            with stack.client() as client:
                await asyncio.to_thread(workload.introduce, client)
            await asyncio.sleep(3)
            return [m.body for m in await drain(interests)], [
                m.body for m in await drain(proposals)
            ]

    interest_bodies, proposal_bodies = asyncio.run(capture())
    [pair] = workload.accepted
    assert len(proposal_bodies) == 1 and stack.sink.wait_for(pair.emails[0], within=10)
    delivery_id = asyncio.run(_first_delivery_id(stack, pair.emails[0]))

    async def duplicate_and_poison() -> tuple[dict[str, str], str]:
        # Exact copies (same event ids) of what each queue already handled...
        for body in interest_bodies:
            await _publish_raw(url, MATCHER_QUEUE.name, body)
        await _publish_raw(url, NOTIFIER_QUEUE.name, proposal_bodies[0])
        job = DeliveryRequested(
            source="notifier",
            correlation_id="fault",
            data=DeliveryJobData(delivery_id=delivery_id, generation=0),
        )
        await _publish_raw(url, DELIVERY_QUEUE.name, encode_batch([job]))
        # ...a pair through the AMQP ingress, every message of it published twice...
        await workload.introduce_over_ingress(url, copies=2)
        # ...and something no consumer can read, on every queue including the ingress.
        queues = [*CONSUMER_QUEUES, INGRESS_QUEUE]
        for queue in CONSUMER_QUEUES:
            await _publish_raw(url, queue.name, POISON)
        await _publish_raw(url, INGRESS_CONTACTS, POISON, exchange=INGRESS_EXCHANGE.name)
        parked = {}
        reason = ""
        connection = await connect(url)
        async with connection:
            channel = await connection.channel()
            for queue in queues:
                dlq = await channel.declare_queue(queue.dead_letter_queue, passive=True)
                message = await wait_for_message(dlq, within=15)
                parked[queue.name] = (
                    message.body[:20].decode(errors="replace") if message else "NOTHING"
                )
                if message is not None and queue is INGRESS_QUEUE:
                    reason = str(message.headers.get(REASON_HEADER, ""))
        return parked, reason

    parked, ingress_reason = asyncio.run(duplicate_and_poison())
    assert all(body.startswith("\x00 not an event") for body in parked.values()), parked
    assert ingress_reason, "the ingress parked its poison message without a reason"
    # The services kept working, and the duplicates changed nothing: the pair sent twice over
    # the ingress is introduced once, like the pairs after it.
    with stack.client() as client:
        workload.introduce(client)
    figures = workload.check(within=20)
    report(
        "duplicate and poison on every queue",
        parked=sorted(parked),
        ingress_reason=ingress_reason[:80],
        **figures,
    )


async def _first_delivery_id(stack: Stack, email: str) -> object:
    import asyncpg

    conn = await asyncpg.connect(stack.infra.database_url)
    try:
        external_id = email.split("@")[0].removeprefix("a.")
        return await conn.fetchval(
            "SELECT id FROM notifier.deliveries WHERE recipient_external_id = $1",
            f"{external_id}-a",
        )
    finally:
        await conn.close()


def test_a_slow_and_cut_network_between_the_matcher_and_rabbitmq(
    stack: Stack, workload: Workload
) -> None:
    with tcp_proxy(5672, delay=0.05) as proxy:
        env = dict(stack.env)
        env["ROAC_AMQP_URL"] = stack.infra.amqp_url.replace(":5672/", f":{proxy.port}/")
        slow_matcher = ServiceProcess(
            "matcher", env, stack.matcher.ready_url, stack.matcher.log_path.parent
        )
        stack.matcher.stop()
        slow_matcher.start()
        try:
            _burst(workload, 3)
            cut = proxy.cut()
            time.sleep(2)
            cut += proxy.cut()
            recovered = wait_ready([slow_matcher, stack.ingest, stack.notifier])
            time.sleep(3)
            workload.stop()
            figures = workload.check()
        finally:
            slow_matcher.stop()
            stack.matcher.start()
    report(
        "slow (50 ms a chunk) and cut network, matcher to RabbitMQ",
        connections_cut=cut,
        ready_again_seconds=round(recovered, 1),
        **figures,
    )


# The delivery bursts: 1,000 introductions (one person by email, one by signed webhook: 2,000
# messages), a fault in the middle, and the copies counted at the SMTP and HTTP sinks. Every
# message must arrive; a copy can only come from a send that was in flight at the fault (its
# in-flight record committed, its result not), and is counted against that bound.
BURST_STARTED = 300  # messages delivered before the fault
# What one notifier can have in flight at once: 4 concurrent groups of ROAC_DELIVERY_GROUP_SIZE.
IN_FLIGHT_CAPACITY = 4 * 16
BURST_SECONDS = 240.0  # every message delivered, and nothing left in flight, within this


@pytest.fixture(scope="module")
def providers() -> Iterator[ProviderServer]:
    with fake_providers(WEBHOOK_SIGNING_KEY.encode()) as server:
        yield server


@dataclass
class Burst:
    stack: Stack
    providers: ProviderServer
    run: str

    @property
    def mails(self) -> set[str]:
        return {f"m{i}.{self.run}@example.org" for i in range(PROPOSALS)}

    @property
    def hooks(self) -> set[str]:
        return {f"/hook/{self.run}-{i}" for i in range(PROPOSALS)}

    def copies(self) -> tuple[Counter[str], Counter[str]]:
        """Every copy each receiver got: emails per address, webhook posts per URL (a repeated
        webhook-id included: the receiver drops it, but it was sent)."""
        mails, hooks = self.mails, self.hooks
        mail = Counter(r for m in self.stack.sink.store.all() for r in m.recipients if r in mails)
        hook = Counter(
            r.path
            for r in self.providers.state.received
            if r.provider in ("webhook", "webhook-repeat") and r.path in hooks
        )
        return mail, hook

    def delivered(self) -> int:
        mail, hook = self.copies()
        return len(mail) + len(hook)

    def in_flight(self) -> int:
        """This burst's deliveries recorded in flight and not finished, now."""
        return asyncio.run(
            self._count(
                "SELECT count(*) FROM notifier.deliveries WHERE recipient_source = 'burst' "
                "AND recipient_external_id LIKE $1 AND status = 'pending' "
                "AND in_flight_token IS NOT NULL"
            )
        )

    def orphaned(self) -> int:
        """Attempts found in flight after the fault and reconciled (recorded 'unknown')."""
        return asyncio.run(
            self._count(
                "SELECT count(*) FROM notifier.delivery_attempts a "
                "JOIN notifier.deliveries d ON d.id = a.delivery_id "
                "WHERE d.recipient_source = 'burst' AND d.recipient_external_id LIKE $1 "
                "AND a.outcome = 'unknown'"
            )
        )

    async def _count(self, sql: str) -> int:
        conn = await asyncpg.connect(self.stack.infra.database_url)
        try:
            return int(await conn.fetchval(sql, f"{self.run}-%"))
        finally:
            await conn.close()

    def start(self) -> None:
        for process in self.stack.processes:
            if not process.running:
                process.start()
        events = _proposals(self.run, self.providers.url)
        asyncio.run(_publish_proposals(self.stack.infra.amqp_url, events))
        deadline = time.monotonic() + 60
        while self.delivered() < BURST_STARTED:
            assert time.monotonic() < deadline, "the burst did not start"
            time.sleep(0.02)

    def settle(self, bound: int) -> dict[str, int]:
        """Wait until every message is delivered and nothing is left in flight; the counts for
        the report (checked against `bound`, the sends in flight at the fault, by
        `_within_bound` once they are reported)."""
        deadline = time.monotonic() + BURST_SECONDS
        while True:
            mail, hook = self.copies()
            done = set(mail) == self.mails and set(hook) == self.hooks
            if done and self.in_flight() == 0:
                break
            assert time.monotonic() < deadline, (
                f"{len(mail)} of {PROPOSALS} emails, {len(hook)} of {PROPOSALS} webhooks "
                f"delivered; {self.in_flight()} still in flight"
            )
            time.sleep(0.5)
        time.sleep(3)  # a resend after this would be a copy too
        mail, hook = self.copies()
        duplicates = sum(n - 1 for n in mail.values()) + sum(n - 1 for n in hook.values())
        orphaned = self.orphaned()
        figures = {
            "smtp_received": sum(mail.values()),
            "http_received": sum(hook.values()),
            "emails_expected": PROPOSALS,
            "webhooks_expected": PROPOSALS,
            "duplicates": duplicates,
            "mail_duplicates": sum(n - 1 for n in mail.values()),
            "webhook_repeats_same_id": sum(n - 1 for n in hook.values()),
            "orphaned_in_flight_reconciled": orphaned,
            "duplicate_bound": bound,
        }
        print(f"\n{figures}")
        return figures


def _within_bound(figures: dict[str, int]) -> None:
    """A copy only ever comes from an attempt in flight at the fault (reconciled after it was
    orphaned, or whose result could not be written), and there are no more of those than sends
    in flight then."""
    assert figures["duplicates"] <= figures["orphaned_in_flight_reconciled"], figures
    assert figures["duplicates"] <= figures["duplicate_bound"], figures
    assert figures["duplicate_bound"] <= IN_FLIGHT_CAPACITY, figures


class InFlightGauge:
    """The notifier's own count of sends in flight (`roac_notifier_sends_in_flight`: recorded
    in flight, result not recorded), read every 20 ms from its /metrics while open; `peak` is
    the most seen. It lives in the process, so it can be read while PostgreSQL is down."""

    def __init__(self, notifier_url: str) -> None:
        self._url = f"{notifier_url}/metrics"
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> InFlightGauge:
        self._read()  # one reading before the fault, so the peak covers its moment
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._read()

    def _read(self) -> None:
        try:
            text = httpx.get(self._url, timeout=1).text
        except httpx.HTTPError:
            return
        for line in text.splitlines():
            if line.startswith("roac_notifier_sends_in_flight "):
                self.peak = max(self.peak, int(float(line.split()[1])))
                self.samples += 1


def _fault_during_burst(
    stack: Stack, providers: ProviderServer, fault: Callable[[Burst], tuple[int, float]]
) -> tuple[Burst, int, float]:
    burst = Burst(stack, providers, run_id())
    burst.start()
    bound, recovered = fault(burst)
    return burst, bound, recovered


def test_postgresql_restarted_during_a_delivery_burst(
    stack: Stack, providers: ProviderServer
) -> None:
    def restart(burst: Burst) -> tuple[int, float]:
        # The bound: the most sends the notifier had in flight from just before the restart
        # until everything is ready again. No send starts while the database is away (a claim
        # needs it), so this is what was in flight at the restart, plus the results it could
        # not write then.
        with InFlightGauge(stack.notifier_url) as gauge:
            restart_postgresql()
            recovered = wait_ready(stack.processes)
        report_sample["in_flight_gauge_samples"] = gauge.samples
        return gauge.peak, recovered

    report_sample: dict[str, int] = {}
    burst, bound, recovered = _fault_during_burst(stack, providers, restart)
    figures = burst.settle(bound)
    report(
        "postgresql restart during a burst of 1,000 introductions (email + webhook)",
        ready_again_seconds=round(recovered, 1),
        in_flight_at_restart=bound,
        **report_sample,
        **figures,
    )
    assert report_sample["in_flight_gauge_samples"] > 0, report_sample
    _within_bound(figures)


def test_notifier_killed_during_a_delivery_burst(stack: Stack, providers: ProviderServer) -> None:
    def kill(burst: Burst) -> tuple[int, float]:
        stack.notifier.kill()
        # The process is gone: what it left in flight is exactly what it may have sent
        # without recording it, the bound on copies.
        in_flight = burst.in_flight()
        stack.notifier.start()
        return in_flight, wait_ready(stack.processes)

    burst, bound, recovered = _fault_during_burst(stack, providers, kill)
    figures = burst.settle(bound)
    report(
        "SIGKILL notifier during a burst of 1,000 introductions (email + webhook)",
        ready_again_seconds=round(recovered, 1),
        in_flight_at_kill=bound,
        **figures,
    )
    _within_bound(figures)
