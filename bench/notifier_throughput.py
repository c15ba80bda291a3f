"""Messages per second the notifier delivers: emails into a local SMTP server and webhook posts
into a local HTTP server (each to its own URL, so no pacing applies). Each delivery is recorded
in flight before it is sent (intro and delivery locks, one committed statement for its group of
16), sent by a real SMTP conversation or HTTP POST, and its result recorded (delivery row,
attempt record, delivery event in the outbox; one transaction for the group). Direct mode: one
introduction is two messages. The receivers (bench/sinks.py) run as a separate process and only
count.

`python -m bench.notifier_throughput` runs it alone (as `make bench` does: a fresh vhost and
database, after the machine is quiet) and prints both figures, their ratio to the RabbitMQ
publish ceiling measured in the same run, and to the issue's targets (300 emails/s, 500
webhooks/s)."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid

import aio_pika
import httpx

from bench import broker_ceiling
from bench.harness import BenchStack, bench_stack, wait_until_quiet
from shared.events import (
    ChannelAddress,
    ChannelType,
    IntroData,
    IntroProposed,
    IntroTopic,
    Participant,
    TopicRelation,
    encode_batch,
)
from shared.topology import EVENTS_EXCHANGE
from tests.support.infra import free_port

PROPOSALS = 1500
RELAY_GROUP = 100  # events per message, as shared/outbox.py's relay groups them
# The floor for `make bench` (issue 18).
TARGET_EMAILS_PER_S = 300.0
TARGET_WEBHOOKS_PER_S = 500.0


def _proposal(run: str, i: int, channel: ChannelType, base: str) -> IntroProposed:
    def person(side: str) -> Participant:
        address = (
            f"{side}{i}.{run}@example.org"
            if channel is ChannelType.EMAIL
            else f"{base}/hook/{run}-{side}{i}"
        )
        return Participant(
            source="bench",
            external_id=f"{run}-{side}{i}",
            name=f"{side} {i}",
            channels=[ChannelAddress(type=channel, address=address)],
        )

    return IntroProposed(
        source="matcher",
        correlation_id=f"bench-{run}",
        data=IntroData(
            proposal_id=uuid.uuid4(),
            participants=[person("a"), person("b")],
            topics=[IntroTopic(topic="bench", relation=TopicRelation.SHARED)],
            score=1.0,
            reason="r",
        ),
    )


async def _publish(url: str, events: list[IntroProposed]) -> None:
    """As the matcher's outbox relay sends them: up to 100 proposals per message."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE.name)
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        encode_batch(events[i : i + RELAY_GROUP]),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=events[0].type,
                )
                for i in range(0, len(events), RELAY_GROUP)
            )
        )


def _wait_for(
    count_url: str, key: str, expected: int, started: float, within: float = 300
) -> float:
    while (seen := int(httpx.get(count_url).json()[key])) < expected:
        if time.perf_counter() - started > within:
            raise TimeoutError(f"{seen} of {expected} delivered")
        time.sleep(0.05)
    return time.perf_counter() - started


def start_sinks(smtp_port: int, http_port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sinks", str(smtp_port), str(http_port)]
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{http_port}/count")
            return process
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)


def measure(stack: BenchStack, http_port: int) -> dict[str, float]:
    count_url = f"http://127.0.0.1:{http_port}/count"
    stack.processes["notifier"].start()
    run = uuid.uuid4().hex[:8]
    emails = [_proposal(run, i, ChannelType.EMAIL, "") for i in range(PROPOSALS)]
    started = time.perf_counter()
    asyncio.run(_publish(stack.infra.amqp_url, emails))
    mail_seconds = _wait_for(count_url, "smtp", 2 * PROPOSALS, started)
    hooks = [
        _proposal(run, i, ChannelType.WEBHOOK, f"http://127.0.0.1:{http_port}")
        for i in range(PROPOSALS)
    ]
    started = time.perf_counter()
    asyncio.run(_publish(stack.infra.amqp_url, hooks))
    hook_seconds = _wait_for(count_url, "http", 2 * PROPOSALS, started)
    return {
        "emails_per_s": 2 * PROPOSALS / mail_seconds,
        "webhooks_per_s": 2 * PROPOSALS / hook_seconds,
    }


def run(*, ceiling: bool = True, settle: bool = True) -> dict[str, float]:
    """The notifier's figures as `make bench` takes them (and, with `ceiling`, the RabbitMQ
    publish ceiling of the same moment, to compare runs on a machine whose speed varies)."""
    figures: dict[str, float] = {}
    if ceiling:
        if settle:
            wait_until_quiet(at_most=60)
        with bench_stack() as stack:
            figures.update(asyncio.run(broker_ceiling.measure(stack.infra)))
    if settle:
        waited, busy = wait_until_quiet(at_most=60)
        print(f"({waited:.0f} s until the machine was quiet; {busy:.0%} busy)", flush=True)
    smtp_port, http_port = free_port(), free_port()
    sinks = start_sinks(smtp_port, http_port)
    try:
        with bench_stack(
            smtp_port=smtp_port,
            ROAC_INTRO_MODE="direct",
            ROAC_QUIET_HOURS_ENABLED="false",
            ROAC_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        ) as stack:
            figures.update(measure(stack, http_port))
    finally:
        sinks.kill()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip the RabbitMQ publish ceiling"
    )
    parser.add_argument(
        "--no-settle", action="store_true", help="do not wait for a quiet machine first"
    )
    args = parser.parse_args()
    figures = run(ceiling=not args.no_ceiling, settle=not args.no_settle)
    emails, hooks = figures["emails_per_s"], figures["webhooks_per_s"]
    print(f"notifier: {emails:,.0f} emails/s, {hooks:,.0f} webhooks/s")
    print(
        f"against the targets: emails {emails / TARGET_EMAILS_PER_S:.2f}x of "
        f"{TARGET_EMAILS_PER_S:.0f}/s, webhooks {hooks / TARGET_WEBHOOKS_PER_S:.2f}x of "
        f"{TARGET_WEBHOOKS_PER_S:.0f}/s"
    )
    if "publish_msgs_per_s" in figures:
        publish = figures["publish_msgs_per_s"]
        print(
            f"RabbitMQ publish ceiling {publish:,.0f} msg/s; emails / ceiling "
            f"{emails / publish:.3f}, webhooks / ceiling {hooks / publish:.3f}"
        )


if __name__ == "__main__":
    main()
