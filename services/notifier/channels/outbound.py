"""Outbound HTTP that can't be turned inward: the guard under every webhook and chat request.

A contact's channel names a URL (a Slack, Mattermost, Discord or Teams webhook, a generic
webhook) and the operator names the Slack API and the Matrix homeserver; roac then connects
there from inside its network. Without a guard a contact could point roac at the cloud metadata
service (169.254.169.254), an admin port on localhost or anything in the private network.

So every address roac connects to is checked, and checked at connect time: the session's
connector resolves names through `GuardedResolver`, which refuses the whole name when any answer
is loopback, private, link-local, unspecified, multicast, reserved, CGNAT (100.64.0.0/10),
or an IPv4 address wrapped in IPv6 (mapped, NAT64, 6to4) that is one of those, and hands aiohttp
exactly the answers it checked: the check and the connect use the same addresses, so a DNS
answer that changes between two lookups (rebinding) cannot slip through. IP literals, which
aiohttp connects to without a resolver, are checked before the request by `check_url`, with the
scheme: HTTPS only unless ROAC_OUTBOUND_ALLOW_HTTP. So are the other ways of writing an IPv4
address that the C resolver reads as one (2130706433, 0x7f000001, 0177.0.0.1, 127.1 are all
127.0.0.1): aiohttp refuses the all-decimal ones as invalid URLs (which would otherwise be retried
as a network error) and resolves the hex ones, so `check_url` refuses them all, permanently,
naming the address they stand for. Proxies from the environment are ignored
(they would resolve names themselves). Response bodies are read up to `MAX_RESPONSE_BYTES`;
the rest is never read (the connection is closed instead).

Operators running local providers (and the tests' fake providers) opt in explicitly:
ROAC_OUTBOUND_ALLOW_PRIVATE_NETWORKS lists the CIDRs that may be called anyway.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from shared.settings import Settings

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

MAX_RESPONSE_BYTES = 64 * 1024


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in pairs)


# Checked in order; the first match names the reason.
_IPV4_REFUSED = _nets(
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "CGNAT shared address space"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved (documentation)"),
    ("198.51.100.0/24", "reserved (documentation)"),
    ("203.0.113.0/24", "reserved (documentation)"),
    ("192.88.99.0/24", "reserved"),
    ("198.18.0.0/15", "reserved (benchmarking)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_IPV6_REFUSED = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("fc00::/7", "private (unique local)"),
    ("fec0::/10", "private (site-local)"),
    ("ff00::/8", "multicast"),
    ("64:ff9b:1::/48", "private (local NAT64)"),
    ("100::/64", "reserved (discard)"),
    ("2001::/23", "reserved (IETF protocol assignments)"),
    ("2001:db8::/32", "reserved (documentation)"),
)
_IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedDestination(OSError):
    """A destination roac must not call (an address or a scheme): a permanent failure, never
    retried. An OSError so that aiohttp passes it through its connector as the cause."""


def refusal_reason(address: IPAddress) -> str | None:
    """Why roac refuses to connect to this address, or None when it is a public address."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = refusal_reason(embedded)
            return None if reason is None else f"IPv4 {embedded} inside IPv6: {reason}"
        for network, reason in _IPV6_REFUSED:
            if address in network:
                return reason
        if address not in _IPV6_GLOBAL_UNICAST:
            return "reserved"
        return None
    for network, reason in _IPV4_REFUSED:
        if address in network:
            return reason
    if not address.is_global:  # anything Python knows about that the table missed
        return "not globally routable"
    return None


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::`,
    6to4 `2002::`), which is where a connection to it would end up."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


@dataclass(frozen=True)
class OutboundPolicy:
    """What outbound requests may reach: public addresses over HTTPS, plus the opt-ins."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allow_http: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls(settings.outbound_allowed_networks, settings.outbound_allow_http)

    def address_refusal(self, host: str) -> str | None:
        """Why connecting to this address (text, as a resolver returns it) is refused."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return f"unparseable address {host!r}"
        if isinstance(address, IPv6Address) and address.scope_id:
            address = IPv6Address(str(address).partition("%")[0])
        if self._allowed(address):
            return None
        return refusal_reason(address)

    def _allowed(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, IPv6Address) and (embedded := _embedded_ipv4(address)):
            candidates.append(embedded)
        return any(
            a.version == n.version and a in n for a in candidates for n in self.allowed_networks
        )

    def check_url(self, url: str) -> None:
        """Refuse a URL before any connection: its scheme, and its host when that is an IP
        literal (aiohttp connects to those without asking the resolver)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "http" and not self.allow_http:
            raise RefusedDestination(
                "http:// refused: HTTPS only (ROAC_OUTBOUND_ALLOW_HTTP allows it)"
            )
        if scheme not in ("http", "https"):
            raise RefusedDestination(f"scheme {scheme or '(none)'!r} refused: HTTPS only")
        host = (parts.hostname or "").partition("%")[0]  # an IPv6 zone says nothing here
        if not host:
            raise RefusedDestination("URL without a host")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if _numeric_host(host):
                raise RefusedDestination(self._numeric_host_refusal(host)) from None
            return  # a name: checked by GuardedResolver when connecting
        if reason := self.address_refusal(host):
            raise RefusedDestination(f"{host} is {reason}")

    def _numeric_host_refusal(self, host: str) -> str:
        """Why a host written as a number, but not as a dotted quad, is refused: always, and
        with what it stands for when that is an inward address."""
        address = _inet_aton(host)
        if address is None:
            return f"{host} is neither a name nor an IPv4 address"
        if reason := self.address_refusal(str(address)):
            return f"{host} stands for {address}, {reason}"
        return f"{host} stands for {address}: write an IPv4 address as four decimal numbers"


# A label inet_aton reads as a number: hexadecimal (0x), octal (leading 0) or decimal.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)


def _numeric_host(host: str) -> bool:
    """Whether every label of the host is a number: the C resolver then reads the host as an
    IPv4 address (or as nothing), never as a name to look up."""
    return all(_NUMERIC_LABEL.fullmatch(label) for label in host.removesuffix(".").split("."))


def _inet_aton(host: str) -> IPv4Address | None:
    """The IPv4 address a numeric host stands for, read by inet_aton(3) itself (one to four
    numbers, the last filling the remaining bytes: 127.1 is 127.0.0.1), or None if none. A final
    dot, which inet_aton refuses, is read past: refusing more is safe here."""
    try:
        return IPv4Address(socket.inet_aton(host.removesuffix(".")))
    except OSError:
        return None


class GuardedResolver(AbstractResolver):
    """Resolves with `inner` (the system resolver by default), then refuses the name if any
    answer is refused by the policy; otherwise returns the answers unchanged, which are the
    addresses aiohttp then connects to."""

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        checked = _checked(self._policy, host, answers)
        if not checked:
            raise RefusedDestination(f"{host} resolves to no address")
        return checked

    async def close(self) -> None:
        await self._inner.close()


def _checked(
    policy: OutboundPolicy, host: str, answers: Iterable[ResolveResult]
) -> list[ResolveResult]:
    checked = list(answers)
    for answer in checked:
        if reason := policy.address_refusal(answer["host"]):
            raise RefusedDestination(f"{host} resolves to {answer['host']}, {reason}")
    return checked


class GuardedConnector(aiohttp.TCPConnector):
    """A TCP connector whose every name lookup goes through `GuardedResolver`."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: AbstractResolver | None = None,
        use_dns_cache: bool = True,
        limit: int = 200,
        limit_per_host: int = 50,
    ) -> None:
        super().__init__(
            resolver=GuardedResolver(policy, resolver),
            use_dns_cache=use_dns_cache,
            limit=limit,
            limit_per_host=limit_per_host,
        )
        self.policy = policy


def guarded_session(
    policy: OutboundPolicy,
    timeout_seconds: float,
    *,
    resolver: AbstractResolver | None = None,
    use_dns_cache: bool = True,
) -> aiohttp.ClientSession:
    """The only kind of session the HTTP channels accept. Created inside the running event
    loop. `resolver` replaces the system resolver under the guard (tests use it)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        connector=GuardedConnector(policy, resolver=resolver, use_dns_cache=use_dns_cache),
        trust_env=False,
    )


def session_policy(session: aiohttp.ClientSession) -> OutboundPolicy:
    """The policy a session's connector enforces; a session without the guard is refused."""
    connector = session.connector
    if not isinstance(connector, GuardedConnector):
        raise TypeError("HTTP channels need a guarded session (outbound.guarded_session)")
    return connector.policy


async def read_capped(response: aiohttp.ClientResponse, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """At most `limit` bytes of the body; the rest is left unread (the connection is then
    closed rather than reused), so a huge or endless answer costs no more than `limit`."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
