"""Which addresses and URLs outbound HTTP refuses (services/notifier/channels/outbound.py), as
plain Python: the classification the connect-time guard applies to every resolved address; and
that a URL no client can request fails a delivery for good (nothing is connected to)."""

from __future__ import annotations

import re
from ipaddress import ip_address, ip_network

import aiohttp
import pytest

from services.notifier.channels.http import _request
from services.notifier.channels.outbound import (
    OutboundPolicy,
    RefusedDestination,
    refusal_reason,
)
from services.notifier.delivery_policy import PermanentDeliveryError
from shared.settings import Settings, parse_networks

REFUSED = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "0.0.0.0": "unspecified",  # noqa: S104 (an address under test, nothing listens)
    "0.1.2.3": "unspecified",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "172.31.255.254": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local (cloud metadata)",
    "169.254.0.1": "link-local",
    "100.64.0.1": "CGNAT",
    "100.127.255.254": "CGNAT",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.2.10": "reserved",
    "198.18.0.1": "reserved",
    "::": "unspecified",
    "::1": "loopback",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "ff02::1": "multicast",
    "2001:db8::1": "reserved",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:169.254.169.254": "link-local",
    "::ffff:10.0.0.1": "private",
    "64:ff9b::7f00:1": "loopback",  # NAT64 of 127.0.0.1
    "2002:a00:1::1": "private",  # 6to4 of 10.0.0.1
    "::7f00:1": "reserved",  # IPv4-compatible, deprecated
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "100.128.0.1", "172.32.0.1", "2606:4700::1111"]


@pytest.mark.parametrize(("address", "reason"), sorted(REFUSED.items()))
def test_inward_addresses_are_refused_with_a_reason(address: str, reason: str) -> None:
    found = refusal_reason(ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ip_address(address)) is None


def test_the_opt_in_allows_only_the_networks_it_names() -> None:
    policy = OutboundPolicy(allowed_networks=(ip_network("127.0.0.0/8"),), allow_http=True)
    assert policy.address_refusal("127.0.0.1") is None
    assert policy.address_refusal("::ffff:127.0.0.1") is None  # the same address, mapped
    assert policy.address_refusal("169.254.169.254") is not None
    assert policy.address_refusal("::1") is not None  # IPv6 loopback was not named
    assert policy.address_refusal("not-an-address") is not None
    assert OutboundPolicy().address_refusal("127.0.0.1") == "loopback"
    assert "link-local" in (OutboundPolicy().address_refusal("fe80::1%eth0") or "")


def test_urls_https_only_and_ip_literals_checked_before_connecting() -> None:
    strict = OutboundPolicy()
    strict.check_url("https://hooks.slack.com/services/x")
    strict.check_url("https://8.8.8.8/hook")
    refused = [
        ("http://hooks.slack.com/services/x", "HTTPS only"),
        ("ftp://example.org/x", "HTTPS only"),
        ("file:///etc/passwd", "HTTPS only"),
        ("https:///no-host", "without a host"),
        ("https://127.0.0.1:9102/metrics", "loopback"),
        ("https://[::1]/x", "loopback"),
        ("https://[::ffff:127.0.0.1]/x", "loopback"),
        ("https://[fe80::1%25eth0]/x", "link-local"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://10.0.0.5/x", "private"),
    ]
    for url, reason in refused:
        with pytest.raises(RefusedDestination, match=reason):
            strict.check_url(url)
    local = OutboundPolicy(allowed_networks=(ip_network("127.0.0.0/8"),), allow_http=True)
    local.check_url("http://127.0.0.1:8080/hook")
    with pytest.raises(RefusedDestination, match="link-local"):
        local.check_url("http://169.254.169.254/")


# Hosts that are numbers but not dotted quads, and what check_url says of them: the address the
# C resolver reads in them (inet_aton), and why that address is refused.
NUMERIC_HOSTS = {
    "2130706433": "127.0.0.1, loopback",
    "0x7f000001": "127.0.0.1, loopback",
    "0X7F.1": "127.0.0.1, loopback",
    "0177.0.0.1": "127.0.0.1, loopback",
    "127.1": "127.0.0.1, loopback",
    "127.0.0.1.": "127.0.0.1, loopback",
    "2852039166": "169.254.169.254, link-local (cloud metadata)",
    "0xa9fea9fe": "169.254.169.254, link-local (cloud metadata)",
    "169.254.43518": "169.254.169.254, link-local (cloud metadata)",
    "0": "0.0.0.0, unspecified",
    "10.1": "10.0.0.1, private",
    "134744072": "8.8.8.8: write an IPv4 address as four decimal numbers",
}


@pytest.mark.parametrize(("host", "meaning"), sorted(NUMERIC_HOSTS.items()))
def test_numeric_hosts_are_refused_as_the_address_they_stand_for(host: str, meaning: str) -> None:
    """aiohttp refuses the decimal forms as invalid URLs (a failure roac would retry) and
    resolves the hex ones: check_url refuses them all before connecting, naming the address."""
    with pytest.raises(RefusedDestination) as refused:
        OutboundPolicy().check_url(f"https://{host}:8443/hook")
    assert str(refused.value) == f"{host.lower()} stands for {meaning}"


def test_numeric_hosts_are_refused_even_where_the_address_is_opted_in() -> None:
    """aiohttp would not connect to 127.1 anyway: the operator is told how to write it."""
    local = OutboundPolicy(allowed_networks=(ip_network("127.0.0.0/8"),), allow_http=True)
    refusal = re.escape("127.1 stands for 127.0.0.1: write an IPv4")
    with pytest.raises(RefusedDestination, match=refusal):
        local.check_url("http://127.1:8080/hook")
    local.check_url("http://127.0.0.1:8080/hook")


@pytest.mark.parametrize("host", ["09.1", "1.2.3.4.5", "256.1", "4294967296", "0x", "1.2.65536"])
def test_numbers_that_are_no_address_are_refused_too(host: str) -> None:
    with pytest.raises(RefusedDestination, match="neither a name nor an IPv4 address"):
        OutboundPolicy().check_url(f"https://{host}/hook")


@pytest.mark.parametrize("host", ["hooks.slack.com", "1.example.org", "0x7f.example", "1.0x1g"])
def test_names_with_numbers_in_them_are_left_to_the_resolver(host: str) -> None:
    OutboundPolicy().check_url(f"https://{host}/hook")


def test_settings_parse_the_opt_ins() -> None:
    assert parse_networks(" 127.0.0.0/8, ::1/128 ,") == (
        ip_network("127.0.0.0/8"),
        ip_network("::1/128"),
    )
    with pytest.raises(ValueError, match="ROAC_OUTBOUND_ALLOW_PRIVATE_NETWORKS"):
        parse_networks("localhost")
    settings = Settings(outbound_allow_private_networks="10.0.0.0/8", outbound_allow_http=True)
    policy = OutboundPolicy.from_settings(settings)
    assert policy.allowed_networks == (ip_network("10.0.0.0/8"),) and policy.allow_http
    default = OutboundPolicy.from_settings(Settings())
    assert default.allowed_networks == () and not default.allow_http


@pytest.mark.parametrize("url", ["https://example.org:99999/", "https://[::1/", "https://a..b/"])
async def test_a_url_no_client_can_request_fails_for_good_not_as_a_network_fault(
    url: str,
) -> None:
    # Stored before ingest checked URLs this strictly: a resend cannot help, so no retries.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PermanentDeliveryError, match="invalid URL"):
            await _request(session, OutboundPolicy(), "POST", url, body=b"", headers={})
