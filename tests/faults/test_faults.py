"""Each promise, tested by breaking something real mid-stream. The pass rule is the same for
every scenario (tests/faults/conftest.py): every accepted pair introduced, nobody introduced
twice, every service ready again within a minute."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path

import aio_pika
import pytest

from services.ingest.ingress import REASON_HEADER
from shared.events import DeliveryJobData, DeliveryRequested, encode_batch
from shared.topology import (
    CONSUMER_QUEUES,
    DELIVERY_QUEUE,
    INGRESS_CONTACTS,
    INGRESS_EXCHANGE,
    INGRESS_QUEUE,
    MATCHER_QUEUE,
    NOTIFIER_QUEUE,
)
from tests.e2e.conftest import Stack
from tests.faults.conftest import Workload, wait_ready
from tests.support.amqp import connect, drain, tap, wait_for_message
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
    version = subprocess.run(
        ["ls", "/etc/postgresql"], capture_output=True, text=True
    ).stdout.split()[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        timeout=120,
    )
    recovered = wait_ready(stack.processes)
    time.sleep(3)
    workload.stop()
    report("postgresql restart", ready_again_seconds=round(recovered, 1), **workload.check())


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
