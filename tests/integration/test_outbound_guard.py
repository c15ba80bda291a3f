"""Outbound HTTP can't be turned inward (services/notifier/channels/outbound.py), against a real
local server that records every request reaching it: names resolving to loopback or the cloud
metadata address are refused when connecting, a rebinding resolver cannot get a second, inward
answer past the check, IP literals and plain http are refused before connecting, the Slack API
and Matrix homeserver URLs are guarded too, and response bodies are capped. Also the webhook's
trust boundary: a receiver holding its own `whsec_` secret verifies its messages with the
Standard Webhooks library, and can mint no link with it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_network
from uuid import uuid4

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks import Webhook

from services.notifier.channels.base import Outgoing
from services.notifier.channels.http import MatrixChannel, SlackAppChannel, WebhookChannel
from services.notifier.channels.outbound import (
    MAX_RESPONSE_BYTES,
    OutboundPolicy,
    guarded_session,
    read_capped,
)
from services.notifier.channels.webhook_signing import destination_key, destination_secret
from services.notifier.delivery_policy import PermanentDeliveryError, TransientDeliveryError
from services.notifier.links import (
    InvalidLink,
    LinkAction,
    LinkClaim,
    LinkKeyring,
    sign_legacy,
    verify,
)
from services.notifier.rendering import Rendered, Style
from shared.events import ChannelType, DeliveryKind
from tests.support.infra import LINK_KEY, WEBHOOK_SIGNING_KEY, free_port

SIGNING_KEY = WEBHOOK_SIGNING_KEY.encode()
BIG_CHUNK = b"x" * 65536
BIG_CHUNKS = 4096  # 256 MiB, if anyone read it all


@dataclass
class Receiver:
    """A local HTTP server: what reached it, and how much of a huge answer it got to write."""

    port: int
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    streamed: list[int] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def at(self, path: str) -> list[tuple[str, dict[str, str], bytes]]:
        return [r for r in self.requests if r[0] == path]


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver(free_port())

    async def big(request: web.Request) -> web.StreamResponse:
        state.requests.append((request.path, dict(request.headers), await request.read()))
        response = web.StreamResponse(status=200)
        written = 0
        try:
            await response.prepare(request)
            for _ in range(BIG_CHUNKS):
                await response.write(BIG_CHUNK)
                written += len(BIG_CHUNK)
            await response.write_eof()
        except ConnectionError:
            pass  # the client hung up: what it wanted is read
        finally:
            state.streamed.append(written)
        return response

    async def anything(request: web.Request) -> web.Response:
        state.requests.append((request.path, dict(request.headers), await request.read()))
        return web.json_response({"ok": True, "event_id": "$e", "channel": {"id": "D1"}})

    app = web.Application()
    app.router.add_route("*", "/big", big)
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", state.port).start()
    yield state
    await runner.cleanup()


class ScriptedResolver(AbstractResolver):
    """A DNS stand-in: each lookup of a name gets that name's next answer (the last repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self._answers = answers
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        script = self._answers[host]
        addresses = script.pop(0) if len(script) > 1 else script[0]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def _outgoing(channel: ChannelType, address: str) -> Outgoing:
    delivery = uuid4()
    chat = {style: f"hello {style.value}" for style in Style}
    payload = {"version": 1, "type": "roac.ask", "delivery_id": str(delivery), "text": "hello"}
    return Outgoing(
        delivery_id=delivery,
        idempotency_key=f"{delivery}.0",
        proposal_id=uuid4(),
        kind=DeliveryKind.ASK,
        channel=channel,
        address=address,
        rendered=Rendered("Someone would like to meet you", "hello", "<p>hello</p>", chat),
        unsubscribe_url="https://roac.example.org/links/u",
        payload=payload,
    )


def _hook(
    session: aiohttp.ClientSession,
    hosts: Sequence[str],
    channel: ChannelType = ChannelType.WEBHOOK,
) -> WebhookChannel:
    return WebhookChannel(session, channel, tuple(hosts), SIGNING_KEY)


HTTP_ONLY = OutboundPolicy(allow_http=True)  # plain http allowed, no private network
LOCAL = OutboundPolicy(allowed_networks=(ip_network("127.0.0.0/8"),), allow_http=True)


async def test_a_name_resolving_to_loopback_is_refused_when_connecting(
    receiver: Receiver,
) -> None:
    async with guarded_session(HTTP_ONLY, 5) as session:  # the system resolver: localhost
        url = receiver.url("/hook/localhost", host="localhost")
        with pytest.raises(PermanentDeliveryError, match=r"localhost resolves to .*loopback"):
            await _hook(session, ["localhost"]).send(_outgoing(ChannelType.WEBHOOK, url))
    assert receiver.at("/hook/localhost") == []


async def test_names_mapped_to_loopback_or_the_metadata_address_are_refused(
    receiver: Receiver,
) -> None:
    resolver = ScriptedResolver(
        {
            "hooks.example.test": [["127.0.0.1"]],
            "metadata.example.test": [["169.254.169.254"]],
            "mixed.example.test": [["8.8.8.8", "127.0.0.1"]],
            "mapped.example.test": [["::ffff:127.0.0.1"]],
        }
    )
    async with guarded_session(HTTP_ONLY, 5, resolver=resolver) as session:
        for host, reason in (
            ("hooks.example.test", "loopback"),
            ("metadata.example.test", "link-local"),
            ("mixed.example.test", "127.0.0.1, loopback"),  # one inward answer is enough
            ("mapped.example.test", "loopback"),
        ):
            hook = _hook(session, [host], ChannelType.MATTERMOST)
            url = receiver.url(f"/hook/{host}", host=host)
            with pytest.raises(PermanentDeliveryError, match=f"destination refused.*{reason}"):
                await hook.send(_outgoing(ChannelType.MATTERMOST, url))
    assert not [r for r in receiver.requests if r[0].endswith(".example.test")]
    assert set(resolver.lookups) == {
        "hooks.example.test",
        "metadata.example.test",
        "mixed.example.test",
        "mapped.example.test",
    }


async def test_a_rebinding_name_cannot_reach_the_local_server(receiver: Receiver) -> None:
    """The name first answers an allowed address (127.0.0.2 stands in for a public one: nothing
    listens there), then 127.0.0.1 where the server listens. A guard that checked one lookup and
    connected after another would be fooled; here each connection uses the very answer that was
    checked, so the first attempt fails to connect and the second is refused."""
    stand_in = OutboundPolicy(allowed_networks=(ip_network("127.0.0.2/32"),), allow_http=True)
    resolver = ScriptedResolver({"rebind.example.test": [["127.0.0.2"], ["127.0.0.1"]]})
    url = receiver.url("/hook/rebind", host="rebind.example.test")
    async with guarded_session(stand_in, 5, resolver=resolver, use_dns_cache=False) as session:
        hook = _hook(session, ["rebind.example.test"])
        with pytest.raises(TransientDeliveryError, match="unreachable"):
            await hook.send(_outgoing(ChannelType.WEBHOOK, url))
        assert resolver.lookups == ["rebind.example.test"]  # checked and connected: one answer
        with pytest.raises(PermanentDeliveryError, match=r"127\.0\.0\.1, loopback"):
            await hook.send(_outgoing(ChannelType.WEBHOOK, url))
    assert receiver.at("/hook/rebind") == []


async def test_ip_literals_and_plain_http_are_refused_before_connecting(
    receiver: Receiver,
) -> None:
    async with guarded_session(OutboundPolicy(), 5) as strict:
        hook = _hook(strict, ["127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254"])
        for url, reason in (
            (receiver.url("/hook/literal"), "HTTPS only"),
            (receiver.url("/hook/literal", scheme="https"), "loopback"),
            (receiver.url("/hook/literal", host="[::ffff:127.0.0.1]", scheme="https"), "loopback"),
            ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ):
            with pytest.raises(PermanentDeliveryError, match=reason):
                await hook.send(_outgoing(ChannelType.WEBHOOK, url))
    async with guarded_session(HTTP_ONLY, 5) as plain:
        with pytest.raises(PermanentDeliveryError, match="loopback"):
            await _hook(plain, ["127.0.0.1"]).send(
                _outgoing(ChannelType.WEBHOOK, receiver.url("/hook/literal"))
            )
    assert receiver.at("/hook/literal") == []


async def test_the_slack_api_and_matrix_homeserver_are_guarded_too(receiver: Receiver) -> None:
    async with guarded_session(HTTP_ONLY, 5) as session:
        slack = SlackAppChannel(session, receiver.url("/slack/api", host="localhost"), "xoxb-t")
        with pytest.raises(PermanentDeliveryError, match="destination refused"):
            await slack.send(_outgoing(ChannelType.SLACK, "U0AAA"))
        matrix = MatrixChannel(session, "http://169.254.169.254", "syt_t")
        with pytest.raises(PermanentDeliveryError, match="destination refused"):
            await matrix.send(_outgoing(ChannelType.MATRIX, "!room:example.org"))
    assert receiver.at("/slack/api/conversations.open") == []


async def test_channels_refuse_a_session_without_the_guard() -> None:
    async with aiohttp.ClientSession() as bare:
        with pytest.raises(TypeError, match="guarded session"):
            WebhookChannel(bare, ChannelType.WEBHOOK, ("127.0.0.1",), SIGNING_KEY)


async def test_response_bodies_are_capped_and_never_read_whole(receiver: Receiver) -> None:
    async with guarded_session(LOCAL, 10) as session:
        started = time.monotonic()
        async with session.get(receiver.url("/big")) as response:
            body = await read_capped(response)
        assert len(body) == MAX_RESPONSE_BYTES
        # Through a channel: accepted (200), and the rest of the answer left unread.
        await _hook(session, ["127.0.0.1"], ChannelType.MATTERMOST).send(
            _outgoing(ChannelType.MATTERMOST, receiver.url("/big"))
        )
        deadline = time.monotonic() + 10
        while len(receiver.streamed) < 2:
            assert time.monotonic() < deadline, "the server never stopped writing"
            await asyncio.sleep(0.05)
    whole = BIG_CHUNKS * len(BIG_CHUNK)
    # The server stopped once the socket buffers were full and the client hung up.
    assert all(written < whole // 4 for written in receiver.streamed), receiver.streamed
    assert time.monotonic() - started < 10


async def test_the_receivers_own_secret_verifies_its_webhooks_but_mints_no_link(
    receiver: Receiver,
) -> None:
    url = receiver.url(f"/hook/{uuid4().hex}")
    out = _outgoing(ChannelType.WEBHOOK, url)
    async with guarded_session(LOCAL, 5) as session:
        await _hook(session, ["127.0.0.1"]).send(out)
    [(_, headers, raw)] = receiver.at(url.removeprefix(receiver.url("")))
    # What the operator hands this receiver: `roac webhooks secret URL`.
    secret = destination_secret(SIGNING_KEY, url)
    assert Webhook(secret).verify(raw, headers) == out.payload
    assert headers["webhook-id"] == out.idempotency_key

    # With that secret, try every way of making a link the notifier would accept.
    links = LinkKeyring([("t1", LINK_KEY.encode())])  # the notifier's key ring (tests' env)
    now = time.time()
    claim = LinkClaim(LinkAction.UNSUBSCRIBE, "crm", "42", int(now) + 3600)
    assert verify(links.sign(claim), links, now) == claim  # a real link verifies
    receiver_key = destination_key(SIGNING_KEY, url)
    assert receiver_key != LINK_KEY.encode() and secret.encode() != LINK_KEY.encode()
    for material in (receiver_key, secret.encode(), secret.removeprefix("whsec_").encode()):
        forged = [
            LinkKeyring([(links.signing_key_id, material)]).sign(claim),
            sign_legacy(claim, material),
        ]
        for token in forged:
            with pytest.raises(InvalidLink):
                verify(token, links, now)
