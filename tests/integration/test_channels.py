"""Each chat and webhook channel against a real local HTTP server that checks requests the way
the real service does (tests/support/fake_providers.py). The fake providers listen on 127.0.0.1
over plain HTTP, which roac refuses by default: these tests opt in explicitly (the guard itself is
tested in test_outbound_guard.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from ipaddress import ip_network
from uuid import uuid4

import aiohttp
import pytest
from standardwebhooks import Webhook

from services.notifier.channels.base import Outgoing
from services.notifier.channels.http import MatrixChannel, SlackAppChannel, WebhookChannel
from services.notifier.channels.outbound import OutboundPolicy, guarded_session
from services.notifier.channels.webhook_signing import destination_secret
from services.notifier.delivery_policy import PermanentDeliveryError, TransientDeliveryError
from services.notifier.rendering import Links, MessageRenderer, Trusted
from shared.events import (
    ChannelAddress,
    ChannelType,
    DeliveryKind,
    IntroData,
    IntroTopic,
    Participant,
    TopicRelation,
)
from tests.support.fake_providers import MATRIX_TOKEN, SLACK_TOKEN, ProviderServer, fake_providers
from tests.support.infra import WEBHOOK_SIGNING_KEY, free_port

SIGNING_KEY = WEBHOOK_SIGNING_KEY.encode()
ALLOWED = ("127.0.0.1",)
# The explicit opt-in for local fake providers (ROAC_OUTBOUND_ALLOW_PRIVATE_NETWORKS, _HTTP).
LOCAL = OutboundPolicy(allowed_networks=(ip_network("127.0.0.0/8"),), allow_http=True)


@pytest.fixture(scope="module")
def providers() -> Iterator[ProviderServer]:
    with fake_providers(SIGNING_KEY) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with guarded_session(LOCAL, 5) as created:
        yield created


def _outgoing(
    channel: ChannelType, address: str, group: tuple[str, ...] = (), name: str = "Ada"
) -> Outgoing:
    intro = IntroData(
        proposal_id=uuid4(),
        participants=[
            Participant(
                source="s",
                external_id="1",
                name=name,
                channels=[ChannelAddress(type=ChannelType.EMAIL, address="ada@example.org")],
            ),
            Participant(
                source="s",
                external_id="2",
                name="Bo @everyone <b>",
                channels=[ChannelAddress(type=ChannelType.EMAIL, address="bo@example.org")],
            ),
        ],
        topics=[IntroTopic(topic="kites", relation=TopicRelation.SHARED)],
        score=1.0,
        reason="r",
    )
    links = Links(None, None, Trusted("https://roac.example.org/links/u"))
    rendered = MessageRenderer().render(DeliveryKind.INTRO, intro, [0], links)
    delivery = uuid4()
    return Outgoing(
        delivery_id=delivery,
        idempotency_key=f"{delivery}.0",
        proposal_id=intro.proposal_id,
        kind=DeliveryKind.INTRO,
        channel=channel,
        address=address,
        rendered=rendered,
        unsubscribe_url="https://roac.example.org/links/u",
        to_name=name,
        group=group,
        payload={"version": 1, "type": "roac.intro", "delivery_id": str(delivery), "text": "hello"},
    )


def _webhook(client: aiohttp.ClientSession, channel: ChannelType) -> WebhookChannel:
    return WebhookChannel(client, channel, ALLOWED, SIGNING_KEY)


async def test_slack_incoming_webhook(
    providers: ProviderServer, client: aiohttp.ClientSession
) -> None:
    path = f"/slack/services/T1/B1/{uuid4().hex}"
    sent = await _webhook(client, ChannelType.SLACK_WEBHOOK).send(
        _outgoing(ChannelType.SLACK_WEBHOOK, providers.url + path)
    )
    [request] = providers.state.at(path)
    assert "Bo @everyone &lt;b&gt;" in request.body["text"]  # Slack entities escaped
    assert sent.provider_id


async def test_slack_webhook_throttling_is_transient_with_retry_after(
    providers: ProviderServer, client: aiohttp.ClientSession
) -> None:
    path = f"/slack/services/T1/B1/{uuid4().hex}"
    providers.state.script(path, 429, retry_after="7")
    with pytest.raises(TransientDeliveryError) as caught:
        await _webhook(client, ChannelType.SLACK_WEBHOOK).send(
            _outgoing(ChannelType.SLACK_WEBHOOK, providers.url + path)
        )
    assert caught.value.retry_after == 7.0


async def test_slack_app_opens_a_group_dm_and_posts(
    providers: ProviderServer, client: aiohttp.ClientSession
) -> None:
    channel = SlackAppChannel(client, f"{providers.url}/slack/api", SLACK_TOKEN)
    out = _outgoing(ChannelType.SLACK, "U0AAA", group=("U0AAA", "U0BBB"))
    sent = await channel.send(out)
    calls = [
        r
        for r in providers.state.received
        if r.provider == "slack_api" and r.body.get("users") == "U0AAA,U0BBB"
    ]
    assert calls
    posts = [
        r
        for r in providers.state.received
        if r.path.endswith("chat.postMessage") and r.body["channel"] == "DU0AAAU0BBB"
    ]
    assert posts and sent.provider_id
    assert channel.rate_key(out) == "slack:U0AAA,U0BBB"


async def test_slack_app_errors(providers: ProviderServer, client: aiohttp.ClientSession) -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid_auth"):
        await SlackAppChannel(client, f"{providers.url}/slack/api", "xoxb-wrong").send(
            _outgoing(ChannelType.SLACK, "U0AAA")
        )
    with pytest.raises(PermanentDeliveryError, match="no Slack bot token"):
        await SlackAppChannel(client, f"{providers.url}/slack/api", "").send(
            _outgoing(ChannelType.SLACK, "U0AAA")
        )


async def test_mattermost_and_teams(
    providers: ProviderServer, client: aiohttp.ClientSession
) -> None:
    hook = f"/mattermost/hooks/{uuid4().hex}"
    await _webhook(client, ChannelType.MATTERMOST).send(
        _outgoing(ChannelType.MATTERMOST, providers.url + hook)
    )
    [posted] = providers.state.at(hook)
    assert "Bo @\u200beveryone" in posted.body["text"]
    flow = f"/teams/workflows/{uuid4().hex}"
    await _webhook(client, ChannelType.TEAMS).send(
        _outgoing(ChannelType.TEAMS, providers.url + flow)
    )
    [card] = providers.state.at(flow)
    title = card.body["attachments"][0]["content"]["body"][0]["text"]
    # The title names Bo: Markdown escaped and no mention, like the message itself.
    assert title.startswith("Meet Bo @\u200beveryone <b\\>")


async def test_mattermost_mentions_of_a_whole_channel_are_neutered(
    providers: ProviderServer, client: aiohttp.ClientSession
) -> None:
    hook = f"/mattermost/hooks/{uuid4().hex}"
    out = _outgoing(ChannelType.MATTERMOST, providers.url + hook, name="@channel @all @here @ada")
    await _webhook(client, ChannelType.MATTERMOST).send(out)
    [posted] = providers.state.at(hook)
    text = posted.body["text"]
    for mention in ("@channel", "@all", "@here", "@ada"):
        assert mention not in text
        assert mention.replace("@", "@\u200b") in text


async def test_discord_waits_for_the_message_and_follows_rate_limit_headers(
    providers: ProviderServer, client: aiohttp.ClientSession
) -> None:
    path = f"/discord/api/webhooks/1/{uuid4().hex}"
    providers.state.discord_remaining = 0
    try:
        sent = await _webhook(client, ChannelType.DISCORD).send(
            _outgoing(ChannelType.DISCORD, providers.url + path)
        )
    finally:
        providers.state.discord_remaining = None
    [request] = providers.state.at(path)
    assert request.body["allowed_mentions"] == {"parse": []}
    assert sent.hold_for == 1.0 and sent.provider_id.isdigit()
    providers.state.script(path, 429)
    with pytest.raises(TransientDeliveryError) as caught:
        await _webhook(client, ChannelType.DISCORD).send(
            _outgoing(ChannelType.DISCORD, providers.url + path)
        )
    assert caught.value.retry_after == 0.5  # from Discord's JSON body


async def test_matrix_transaction_ids_make_sends_idempotent(
    providers: ProviderServer, client: aiohttp.ClientSession
) -> None:
    channel = MatrixChannel(client, f"{providers.url}/matrix", MATRIX_TOKEN)
    room = f"!{uuid4().hex[:8]}:example.org"
    out = _outgoing(ChannelType.MATRIX, room)
    first, second = await channel.send(out), await channel.send(out)
    assert first.provider_id == second.provider_id
    assert (
        len([r for r in providers.state.received if r.provider == "matrix" and room in r.path]) == 1
    )
    with pytest.raises(PermanentDeliveryError, match="401"):
        await MatrixChannel(client, f"{providers.url}/matrix", "wrong").send(out)


async def test_generic_webhook_is_signed_the_standard_way_with_a_stable_id(
    providers: ProviderServer, client: aiohttp.ClientSession
) -> None:
    path = f"/hook/{uuid4().hex}"
    out = _outgoing(ChannelType.WEBHOOK, providers.url + path)
    await _webhook(client, ChannelType.WEBHOOK).send(out)
    [request] = providers.state.at(path)  # the fake receiver verified it (standardwebhooks)
    assert request.body == out.payload
    assert request.headers["webhook-id"] == out.idempotency_key
    assert request.headers["webhook-signature"].startswith("v1,")
    assert not any(h.startswith("x-roac-") for h in request.headers)
    # The destination's own secret, as `roac webhooks secret URL` prints it, verifies it.
    secret = destination_secret(SIGNING_KEY, providers.url + path)
    body = json.dumps(out.payload, separators=(",", ":")).encode()  # the bytes roac sent
    assert Webhook(secret).verify(body, request.headers) == out.payload
    # A resend (after a crash) carries the same id: the receiver drops the repeat.
    await _webhook(client, ChannelType.WEBHOOK).send(out)
    assert [r.headers["webhook-id"] for r in providers.state.at(path)] == [out.idempotency_key] * 2
    assert [r.provider for r in providers.state.at(path)] == ["webhook", "webhook-repeat"]
    with pytest.raises(PermanentDeliveryError, match="401"):
        await WebhookChannel(client, ChannelType.WEBHOOK, ALLOWED, b"another-key").send(out)


async def test_generic_webhook_without_a_signing_key_fails_permanently(
    providers: ProviderServer, client: aiohttp.ClientSession
) -> None:
    path = f"/hook/{uuid4().hex}"
    with pytest.raises(PermanentDeliveryError, match="ROAC_WEBHOOK_SIGNING_KEY"):
        await WebhookChannel(client, ChannelType.WEBHOOK, ALLOWED, b"").send(
            _outgoing(ChannelType.WEBHOOK, providers.url + path)
        )
    assert providers.state.at(path) == []


async def test_failures_are_classified(
    providers: ProviderServer, client: aiohttp.ClientSession
) -> None:
    path = f"/hook/{uuid4().hex}"
    providers.state.script(path, 503, 400)
    out = _outgoing(ChannelType.WEBHOOK, providers.url + path)
    with pytest.raises(TransientDeliveryError):
        await _webhook(client, ChannelType.WEBHOOK).send(out)
    with pytest.raises(PermanentDeliveryError, match="400"):
        await _webhook(client, ChannelType.WEBHOOK).send(out)
    down = _outgoing(ChannelType.WEBHOOK, f"http://127.0.0.1:{free_port()}/hook/x")
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        await _webhook(client, ChannelType.WEBHOOK).send(down)


async def test_hosts_off_the_allow_list_are_never_called(
    providers: ProviderServer, client: aiohttp.ClientSession
) -> None:
    before = len(providers.state.received)
    out = _outgoing(ChannelType.WEBHOOK, f"http://localhost:{providers.port}/hook/x")
    with pytest.raises(PermanentDeliveryError, match="ALLOWED_HOSTS"):
        await _webhook(client, ChannelType.WEBHOOK).send(out)
    assert len(providers.state.received) == before
