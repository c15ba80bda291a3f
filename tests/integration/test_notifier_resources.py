"""Resource proposals (resource.proposed.v1) through the notifier's use cases, against the real
PostgreSQL, a real SMTP server and the fake providers, with a clock the tests move. Jobs the
notifier queues in its outbox are handed to the worker by the test, as the broker would."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from typing import Any

import aiohttp
import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from services.notifier.answers import Answers, Outcome
from services.notifier.channel_registry import build_channels, http_session
from services.notifier.deliveries import DeliveryWorker, RetryPolicy
from services.notifier.links import LinkKeyring, LinkMaker
from services.notifier.planning import QuietHours
from services.notifier.rate_limit import RateLimiter
from services.notifier.rendering import MessageRenderer
from services.notifier.resources import ResourceIntake
from services.notifier.routes import api
from services.notifier.smtp import SmtpSender
from services.notifier.store.uow import NotifierStore
from services.notifier.subscriptions import by_type
from shared.api_keys import ApiKeyMiddleware, ApiKeyring
from shared.events import (
    ChannelAddress,
    ChannelType,
    EventBatch,
    Participant,
    ResourceData,
    ResourceProposed,
    decode_event,
)
from shared.settings import Settings
from tests.support.clock import FakeClock
from tests.support.fake_providers import ProviderServer, fake_providers
from tests.support.infra import WEBHOOK_SIGNING_KEY
from tests.support.smtp_sink import SmtpSink, smtp_sink

SECRET = b"notifier-resources-secret-0123456789ab"
API_KEY = "resources-test-key-0123456789"
NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TITLE = "Kites & <script>alert(1)</script> over the bay"
URL = "https://example.org/kites?a=1&b=(2)"
REASON = "You care about kite aerial photography"


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
    intake: ResourceIntake
    worker: DeliveryWorker
    answers: Answers
    clock: FakeClock
    pool: asyncpg.Pool
    links: LinkMaker

    async def apply(self, *proposals: ResourceProposed) -> None:
        """As the notifier's subscriber does: dispatched by the message's type."""
        await by_type({"resource.proposed.v1": self.intake.apply})(
            EventBatch(events=list(proposals))
        )

    async def run_jobs(self, *, include_delayed: bool = False) -> list[str]:
        """Hand every queued job to the worker; return the delay queues still holding jobs."""
        for _ in range(100):
            rows = await self.pool.fetch(
                "DELETE FROM messaging.outbox WHERE producer = 'notifier' "
                "AND (routing_key = 'delivery.requested.v1' "
                "     OR ($1 AND routing_key LIKE 'roac.notifier.delay.%')) "
                "RETURNING body",
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
        return [r["routing_key"] for r in delayed]

    async def events(self, routing_key: str, proposal: ResourceProposed) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT body FROM messaging.outbox WHERE routing_key = $1", routing_key
        )
        found = [json.loads(r["body"])["data"] for r in rows]
        return [e for e in found if e["proposal_id"] == str(proposal.data.proposal_id)]


MakeNotifier = Callable[..., Notifier]


@pytest.fixture
async def make_notifier(
    pool: asyncpg.Pool, settings: Settings, sink: SmtpSink
) -> AsyncIterator[MakeNotifier]:
    """Builds the notifier's objects as its app does; closes their connections afterwards."""
    configured = settings.model_copy(
        update={
            "smtp_port": sink.port,
            "webhook_allowed_hosts": "127.0.0.1",
        }
    )
    opened: list[tuple[aiohttp.ClientSession, SmtpSender]] = []

    def make(*, quiet: bool = False) -> Notifier:
        clock = FakeClock(NOON)
        store = NotifierStore(pool)
        quiet_hours = QuietHours(enabled=quiet, start=21, end=8, fallback_timezone="UTC")
        links = LinkMaker("http://roac.test", LinkKeyring.single(SECRET))
        client = http_session(configured)
        smtp = SmtpSender(configured)
        opened.append((client, smtp))
        worker = DeliveryWorker(
            store,
            build_channels(configured, client, smtp),
            MessageRenderer(),
            links,
            retry=RetryPolicy(max_attempts=3, base_seconds=5, max_delay_seconds=600),
            quiet=quiet_hours,
            limiter=RateLimiter(100.0),
            clock=clock,
            rng=random.Random(1),
        )
        intake = ResourceIntake(store, quiet=quiet_hours, clock=clock, deliver=worker.deliver_now)
        answers = Answers(
            store,
            keyring=LinkKeyring.single(SECRET),
            ask_ttl=timedelta(hours=72),
            quiet=quiet_hours,
            clock=clock,
        )
        return Notifier(intake, worker, answers, clock, pool, links)

    yield make
    for client, smtp in opened:
        await client.close()
        await smtp.close()


def _recipient(run: str, *channels: ChannelAddress, tz: str = "UTC") -> Participant:
    return Participant(
        source="t",
        external_id=f"{run}-r",
        name="Ada <b>Quinn</b>",
        timezone=tz,
        channels=list(channels)
        or [ChannelAddress(type=ChannelType.EMAIL, address=f"r.{run}@example.org")],
    )


def _resource(recipient: Participant, resource_id: uuid.UUID | None = None) -> ResourceProposed:
    return ResourceProposed(
        source="matcher",
        correlation_id="c-resource",
        data=ResourceData(
            proposal_id=uuid.uuid4(),
            resource_id=resource_id or uuid.uuid4(),
            url=URL,
            title=TITLE,
            recipient=recipient,
            topics=["kite aerial photography", "sailing"],
            reason=REASON,
        ),
    )


def _sent(kind: str, outcome: str, channel: str = "email") -> float:
    value = REGISTRY.get_sample_value(
        "roac_notifier_deliveries_total", {"channel": channel, "kind": kind, "outcome": outcome}
    )
    return value or 0.0


async def _delivery(pool: asyncpg.Pool, proposal: ResourceProposed) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT kind, status, attempts, channel, positions FROM notifier.deliveries "
        "WHERE proposal_id = $1",
        proposal.data.proposal_id,
    )
    assert row is not None
    return row


async def test_a_resource_is_emailed_once_with_its_title_url_and_reason_escaped(
    pool: asyncpg.Pool, sink: SmtpSink, make_notifier: MakeNotifier
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = make_notifier()
    proposal = _resource(_recipient(run))
    sent_before = _sent("resource", "sent")
    for _ in range(3):  # the message, and two redeliveries of it
        await notifier.apply(proposal)
    await notifier.run_jobs()
    [mail] = sink.to(f"r.{run}@example.org")
    assert TITLE in mail.subject and "kite aerial photography" in mail.subject
    assert TITLE in mail.text and URL in mail.text and REASON in mail.text
    assert "Ada <b>Quinn</b>" in mail.text
    assert "<script>" not in mail.html and "<b>" not in mail.html
    assert "Kites &amp; &lt;script&gt;alert(1)&lt;/script&gt; over the bay" in mail.html
    assert 'href="https://example.org/kites?a=1&amp;b=(2)"' in mail.html
    assert "Ada &lt;b&gt;Quinn&lt;/b&gt;" in mail.html
    parsed = message_from_bytes(mail.raw, policy=policy.default)
    unsubscribe = str(parsed["List-Unsubscribe"]).strip().strip("<>")
    assert unsubscribe.startswith("http://roac.test/links/")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe in mail.text and unsubscribe in mail.html
    row = await _delivery(pool, proposal)
    assert (row["kind"], row["status"], row["attempts"], row["positions"]) == (
        "resource",
        "sent",
        1,
        [0],
    )
    [succeeded] = await notifier.events("delivery.succeeded.v1", proposal)
    assert succeeded["kind"] == "resource" and succeeded["recipient"]["external_id"] == f"{run}-r"
    assert _sent("resource", "sent") == sent_before + 1
    # The unsubscribe link in it works like any other.
    token = unsubscribe.rsplit("/", 1)[1]
    assert (await notifier.answers.answer(token)).outcome is Outcome.UNSUBSCRIBED


async def test_a_redelivered_message_sends_nothing_twice(
    pool: asyncpg.Pool, sink: SmtpSink, make_notifier: MakeNotifier
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = make_notifier()
    first, second = _resource(_recipient(run)), _resource(_recipient(f"{run}b"))
    batch = EventBatch(events=[first, second])

    async def crash(due: object) -> None:
        raise ConnectionError("the notifier stopped right after its commit")

    crashed = ResourceIntake(
        NotifierStore(pool),
        quiet=QuietHours(False, 21, 8, "UTC"),
        clock=notifier.clock,
        deliver=crash,
    )
    with pytest.raises(ConnectionError):
        await crashed.apply(batch)
    assert sink.to(f"r.{run}@example.org") == []
    # The message comes back (twice at once, say, to two notifiers): what its first run left
    # untried is attempted, once.
    await asyncio.gather(notifier.apply(first, second), notifier.apply(first, second))
    await notifier.apply(first, second)
    await notifier.run_jobs()
    assert len(sink.to(f"r.{run}@example.org")) == 1
    assert len(sink.to(f"r.{run}b@example.org")) == 1
    # The same resource proposed to the same person again, under another proposal id: nothing.
    again = _resource(_recipient(run), resource_id=first.data.resource_id)
    await notifier.apply(again)
    await notifier.run_jobs()
    assert len(sink.to(f"r.{run}@example.org")) == 1


async def test_an_opted_out_recipient_gets_nothing(
    pool: asyncpg.Pool, sink: SmtpSink, make_notifier: MakeNotifier
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = make_notifier(quiet=True)
    recipient = _recipient(run)
    token = notifier.links.unsubscribe(
        recipient.source, recipient.external_id, notifier.clock.now().timestamp()
    ).rsplit("/", 1)[1]
    assert (await notifier.answers.answer(token)).outcome is Outcome.UNSUBSCRIBED
    suppressed_before = _sent("resource", "suppressed")
    proposal = _resource(recipient)
    await notifier.apply(proposal)
    assert await notifier.run_jobs() == []
    assert sink.to(f"r.{run}@example.org") == []
    assert (await _delivery(pool, proposal))["status"] == "suppressed"
    assert _sent("resource", "suppressed") == suppressed_before + 1
    # Opted out while the message waited for the morning: it is not sent either.
    late = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)
    notifier.clock.set(late)
    waiting_for = _recipient(f"{run}m")
    held = _resource(waiting_for)
    await notifier.apply(held)
    assert await notifier.run_jobs() == ["roac.notifier.delay.3600s"]
    token = notifier.links.unsubscribe(
        waiting_for.source, waiting_for.external_id, late.timestamp()
    ).rsplit("/", 1)[1]
    await notifier.answers.answer(token)
    notifier.clock.set(datetime(2026, 6, 2, 8, 0, tzinfo=UTC))
    await notifier.run_jobs(include_delayed=True)
    assert sink.to(f"r.{run}m@example.org") == []
    assert (await _delivery(pool, held))["status"] == "suppressed"


async def test_chat_recipients_receive_it_escaped_for_their_chat(
    pool: asyncpg.Pool, sink: SmtpSink, providers: ProviderServer, make_notifier: MakeNotifier
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = make_notifier()
    slack, hook = f"/slack/services/T0/B0/{run}", f"/hook/{run}"
    on_slack = _resource(
        _recipient(
            run, ChannelAddress(type=ChannelType.SLACK_WEBHOOK, address=providers.url + slack)
        )
    )
    on_webhook = _resource(
        _recipient(
            f"{run}w", ChannelAddress(type=ChannelType.WEBHOOK, address=providers.url + hook)
        )
    )
    await notifier.apply(on_slack, on_webhook)
    await notifier.run_jobs()
    [posted] = providers.state.at(slack)
    text = posted.body["text"]
    assert "<script>" not in text and "Ada &lt;b&gt;Quinn&lt;/b&gt;" in text
    # The resource as a Slack link: its URL's '(' and ')' percent-encoded, '&' as an entity.
    assert (
        "<https://example.org/kites?a=1&amp;b=%282%29|"
        "Kites &amp; &lt;script&gt;alert(1)&lt;/script&gt; over the bay>"
    ) in text
    assert REASON in text and "<http://roac.test/links/" in text  # the unsubscribe link
    [received] = providers.state.at(hook)
    assert received.provider == "webhook"  # the signature checked out
    body = received.body
    assert body["type"] == "roac.resource"
    assert body["proposal_id"] == str(on_webhook.data.proposal_id)
    assert body["resource"] == {
        "id": str(on_webhook.data.resource_id),
        "url": URL,
        "title": TITLE,
        "reason": REASON,
    }
    assert body["topics"] == ["kite aerial photography", "sailing"]
    assert body["links"]["accept"] is None and body["links"]["unsubscribe"].startswith(
        "http://roac.test/links/"
    )
    assert TITLE in body["text"] and "participants" not in body
    for proposal, channel in ((on_slack, "slack_webhook"), (on_webhook, "webhook")):
        [event] = await notifier.events("delivery.succeeded.v1", proposal)
        assert (event["kind"], event["channel"]) == ("resource", channel)


async def test_a_transient_failure_retries_and_a_permanent_one_falls_back(
    pool: asyncpg.Pool, sink: SmtpSink, providers: ProviderServer, make_notifier: MakeNotifier
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = make_notifier()
    flaky, gone = f"/hook/{run}-flaky", f"/hook/{run}-gone"
    providers.state.script(flaky, 503)
    providers.state.script(gone, 404)
    retried = _resource(
        _recipient(run, ChannelAddress(type=ChannelType.WEBHOOK, address=providers.url + flaky))
    )
    fell_back = _resource(
        _recipient(
            f"{run}f",
            ChannelAddress(type=ChannelType.WEBHOOK, address=providers.url + gone),
            ChannelAddress(type=ChannelType.EMAIL, address=f"r.{run}f@example.org"),
        )
    )
    unreachable = _resource(
        _recipient(
            f"{run}u", ChannelAddress(type=ChannelType.WEBHOOK, address=providers.url + gone)
        )
    )
    providers.state.script(gone, 404)  # one for each of the two people on it
    await notifier.apply(retried, fell_back, unreachable)
    assert await notifier.run_jobs() == ["roac.notifier.delay.1s"]  # ~5 s: round the 1 s tier
    assert (await _delivery(pool, retried))["status"] == "pending"
    notifier.clock.advance(10)
    assert await notifier.run_jobs(include_delayed=True) == []
    assert [r.provider for r in providers.state.at(flaky)] == ["webhook", "webhook"]
    [succeeded] = await notifier.events("delivery.succeeded.v1", retried)
    assert (succeeded["kind"], succeeded["attempts"]) == ("resource", 2)
    assert len(sink.to(f"r.{run}f@example.org")) == 1
    attempts = await pool.fetch(
        "SELECT a.channel, a.outcome FROM notifier.delivery_attempts a "
        "JOIN notifier.deliveries d ON d.id = a.delivery_id WHERE d.proposal_id = $1 "
        "ORDER BY a.attempt",
        fell_back.data.proposal_id,
    )
    assert [(a["channel"], a["outcome"]) for a in attempts] == [
        ("webhook", "permanent"),
        ("email", "sent"),
    ]
    [failed] = await notifier.events("delivery.failed.v1", unreachable)
    assert (failed["kind"], failed["permanent"]) == ("resource", True)
    assert (await _delivery(pool, unreachable))["status"] == "failed"


async def test_where_a_resources_deliveries_stand(
    pool: asyncpg.Pool, sink: SmtpSink, make_notifier: MakeNotifier
) -> None:
    run = uuid.uuid4().hex[:8]
    notifier = make_notifier()
    resource_id = uuid.uuid4()
    opted_out = _recipient(f"{run}o")
    token = notifier.links.unsubscribe(
        opted_out.source, opted_out.external_id, notifier.clock.now().timestamp()
    ).rsplit("/", 1)[1]
    await notifier.answers.answer(token)
    await notifier.apply(
        _resource(_recipient(f"{run}a"), resource_id), _resource(opted_out, resource_id)
    )
    await notifier.apply(_resource(_recipient(f"{run}x")))  # another resource
    app = FastAPI()
    app.include_router(api)
    app.state.store = NotifierStore(pool)
    app.add_middleware(ApiKeyMiddleware, keyring=ApiKeyring({"test": API_KEY}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notifier") as client:
        path = f"/v1/resources/deliveries?resource={resource_id}"
        assert (await client.get(path)).status_code == 401
        answer = await client.get(path, headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 200
    listed = answer.json()
    assert listed["resource"] == str(resource_id)
    assert [
        (d["recipient"]["external_id"], d["channel"], d["status"], d["attempts"])
        for d in listed["deliveries"]
    ] == [(f"{run}a-r", "email", "sent", 1), (f"{run}o-r", "email", "suppressed", 0)]
    assert "Ada" not in answer.text  # who, by reference only
