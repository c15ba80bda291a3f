"""The notifier SIGKILLed in the middle of a burst of 1,000 proposals, then restarted: every
participant gets each message exactly once, counted at the SMTP and HTTP sinks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import aio_pika
import pytest

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
from tests.e2e.conftest import Stack, run_id, running_stack
from tests.support.fake_providers import ProviderServer, fake_providers
from tests.support.infra import WEBHOOK_SIGNING_KEY

pytestmark = pytest.mark.e2e

PROPOSALS = 1000


@pytest.fixture(scope="module")
def providers() -> Iterator[ProviderServer]:
    with fake_providers(WEBHOOK_SIGNING_KEY.encode()) as server:
        yield server


@pytest.fixture(scope="module")
def burst_stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    with running_stack(
        "burst",
        tmp_path_factory.mktemp("burst-logs"),
        request,
        ROAC_INTRO_MODE="direct",
        ROAC_QUIET_HOURS_ENABLED="false",
        ROAC_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        ROAC_RETRY_BASE_SECONDS="1",
    ) as stack:
        yield stack


def _proposals(run: str, hook_base: str) -> list[IntroProposed]:
    found = []
    for i in range(PROPOSALS):
        by_mail = Participant(
            source="burst",
            external_id=f"{run}-m{i}",
            name=f"Mail {i}",
            channels=[ChannelAddress(type=ChannelType.EMAIL, address=f"m{i}.{run}@example.org")],
        )
        by_hook = Participant(
            source="burst",
            external_id=f"{run}-h{i}",
            name=f"Hook {i}",
            channels=[
                ChannelAddress(type=ChannelType.WEBHOOK, address=f"{hook_base}/hook/{run}-{i}")
            ],
        )
        found.append(
            IntroProposed(
                source="matcher",
                correlation_id=f"burst-{run}",
                data=IntroData(
                    proposal_id=uuid.uuid4(),
                    participants=[by_mail, by_hook],
                    topics=[IntroTopic(topic="bursts", relation=TopicRelation.SHARED)],
                    score=2.0,
                    reason="r",
                ),
            )
        )
    return found


async def _publish(url: str, events: list[IntroProposed]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE.name)
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        encode_batch([e]),
                        message_id=str(e.message_id),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=e.type,
                )
                for e in events
            )
        )


def test_sigkill_mid_burst_then_restart_delivers_each_message_exactly_once(
    burst_stack: Stack, providers: ProviderServer
) -> None:
    run = run_id()
    sink = burst_stack.sink
    events = _proposals(run, providers.url)
    mails = {f"m{i}.{run}@example.org" for i in range(PROPOSALS)}
    hooks = {f"/hook/{run}-{i}" for i in range(PROPOSALS)}

    def delivered() -> tuple[list[str], list[str]]:
        """What each participant got, as their mailbox and their webhook receiver see it: one
        message per Message-ID, one per webhook-id."""
        mail = list(
            {
                (r, m.message_id): r for m in sink.store.all() for r in m.recipients if r in mails
            }.values()
        )
        hook = [
            r.path for r in providers.state.received if r.provider == "webhook" and r.path in hooks
        ]
        return mail, hook

    def raw_repeats() -> int:
        mail = Counter(r for m in sink.store.all() for r in m.recipients if r in mails)
        hook = [
            r
            for r in providers.state.received
            if r.provider == "webhook-repeat" and r.path in hooks
        ]
        return sum(n - 1 for n in mail.values()) + len(hook)

    asyncio.run(_publish(burst_stack.infra.amqp_url, events))
    deadline = time.monotonic() + 60
    while sum(map(len, delivered())) < 400:
        assert time.monotonic() < deadline, "the burst did not start"
        time.sleep(0.02)
    burst_stack.notifier.kill()
    killed_at = sum(map(len, delivered()))
    burst_stack.notifier.start()

    deadline = time.monotonic() + 120
    while True:
        mail, hook = delivered()
        if set(mail) == mails and set(hook) == hooks:
            break
        assert time.monotonic() < deadline, (
            f"{len(set(mail))} mails, {len(set(hook))} webhooks arrived"
        )
        time.sleep(0.2)
    time.sleep(2)
    mail, hook = delivered()
    mail_counts, hook_counts = Counter(mail), Counter(hook)
    # Only what was in flight at the kill can be resent (the window between the provider's
    # acceptance and the commit), and always under the same key, so receivers drop it.
    assert raw_repeats() <= 64
    duplicates = {k: v for k, v in (mail_counts + hook_counts).items() if v > 1}
    repeats = raw_repeats()
    print(
        f"\nkilled after {killed_at} of {2 * PROPOSALS} messages; "
        f"resent with the same key: {repeats}"
    )
    assert set(mail_counts.values()) == {1}, duplicates
    assert set(hook_counts.values()) == {1}, duplicates
