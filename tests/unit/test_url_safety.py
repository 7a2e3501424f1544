"""Which addresses an endpoint may reach: refused by kind, IPv4 inside IPv6 included."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest

from webhooks.settings import EndpointsSettings
from webhooks.url_safety import (
    LOOPBACK,
    NO_INNER_NETWORKS,
    AllowedNetworks,
    NetworksUnreadable,
    UnsafeAddress,
    addresses,
    check_host,
    refusal,
)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "a cloud metadata service"),
        ("169.254.1.1", "link-local"),
        ("fd00:ec2::254", "a cloud metadata service"),
        ("168.63.129.16", "a cloud metadata service"),
        ("127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "not a public address"),
        ("224.0.0.1", "multicast"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback (carried in ::ffff:7f00:1)"),
        ("::127.0.0.1", "loopback (carried in ::7f00:1)"),
        ("2002:a00:1::", "private (carried in 2002:a00:1::)"),
        ("64:ff9b::a9fe:101", "link-local (carried in 64:ff9b::a9fe:101)"),
        ("::ffff:0:7f00:1", "loopback (carried in ::ffff:0:7f00:1)"),
        ("::ffff:0:a00:1", "private (carried in ::ffff:0:a00:1)"),
        ("64:ff9b:1::7f00:1", "local-use NAT64, which may reach any inner IPv4 address"),
        ("64:ff9b:1:7f00:1::", "local-use NAT64, which may reach any inner IPv4 address"),
    ],
)
def test_inner_addresses_are_refused_by_kind(address: str, kind: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


async def test_a_literal_host_is_checked_without_resolving() -> None:
    with pytest.raises(UnsafeAddress, match=r"^::ffff:127\.0\.0\.1 is loopback"):
        await check_host("[::ffff:127.0.0.1]")
    await check_host("8.8.8.8")


async def test_a_name_is_checked_by_every_address_it_resolves_to() -> None:
    # A real lookup: localhost resolves to loopback on every machine.
    with pytest.raises(UnsafeAddress, match=r"localhost resolves to .*, which is loopback"):
        await check_host("localhost")


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(UnsafeAddress, match="does not resolve"):
        await check_host("no-such-host.invalid")


async def _rebound(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
    """A resolver whose answer changed since the endpoint was checked."""
    return [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
        for address in ("93.184.216.34", "10.0.0.1")
    ]


async def test_at_connect_time_a_name_resolving_to_an_inner_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", _rebound)
    with pytest.raises(UnsafeAddress, match=r"hooks\.example resolves to 10\.0\.0\.1, which is private"):
        await addresses("hooks.example", 443, NO_INNER_NETWORKS)
    assert await addresses("hooks.example", 443, AllowedNetworks.parse("10.0.0.0/8")) == [
        (socket.AF_INET, "93.184.216.34"),
        (socket.AF_INET, "10.0.0.1"),
    ]


async def test_at_connect_time_an_inner_literal_is_refused_and_a_name_is_resolved() -> None:
    with pytest.raises(UnsafeAddress, match="is loopback"):
        await addresses("127.0.0.1", 80, NO_INNER_NETWORKS)
    with pytest.raises(UnsafeAddress, match=r"localhost resolves to .* loopback"):
        await addresses("localhost", 80, NO_INNER_NETWORKS)
    assert (socket.AF_INET, "127.0.0.1") in await addresses("localhost", 80, LOOPBACK)
    assert await addresses("::1", 80, LOOPBACK) == [(socket.AF_INET6, "::1")]


@pytest.mark.parametrize(
    ("listed", "address", "allowed"),
    [
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "192.168.1.1", False),
        ("10.0.0.0/8", "::ffff:10.1.2.3", True),  # the IPv4 address it carries is listed
        ("127.0.0.0/8,::1/128", "::1", True),
        ("127.0.0.0/8,::1/128", "10.0.0.1", False),
        # Metadata and link-local addresses only by a network inside them, never a wider one.
        ("0.0.0.0/0", "169.254.169.254", False),
        ("0.0.0.0/0", "169.254.1.1", False),
        ("0.0.0.0/0", "10.0.0.1", True),
        ("169.254.0.0/16", "169.254.1.1", True),
        ("169.254.0.0/16", "169.254.169.254", False),
        ("169.254.169.254/32", "169.254.169.254", True),
        ("fc00::/7", "fd00:ec2::254", False),
        ("fd00:ec2::254", "fd00:ec2::254", True),
        ("::/0", "fe80::1", False),
        ("::/0", "::ffff:169.254.169.254", False),
        ("fe80::/64", "fe80::1", True),
        # Local-use NAT64 may embed 169.254.169.254 anywhere: only a listed network inside it opens it.
        ("::/0", "64:ff9b:1::a9fe:a9fe", False),
        ("::/0", "64:ff9b:1:a9fe:a9fe::", False),
        ("64:ff9b:1::/48", "64:ff9b:1::a00:1", True),
    ],
)
def test_inner_networks_are_allowed_by_name(listed: str, address: str, allowed: bool) -> None:
    assert AllowedNetworks.parse(listed).allows(ipaddress.ip_address(address)) is allowed


async def test_an_address_outside_the_listed_networks_is_refused_naming_them() -> None:
    with pytest.raises(
        UnsafeAddress, match=r"^10\.0\.0\.1 is private, outside MERLIN_ENDPOINTS_ALLOW_NETWORKS \(127"
    ):
        await addresses("10.0.0.1", 80, LOOPBACK)


def test_the_settings_list_networks_and_refuse_what_is_not_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERLIN_ENDPOINTS_ALLOW_NETWORKS", " 10.0.0.0/8, ::1 ")
    assert str(EndpointsSettings().allowed_networks) == "10.0.0.0/8,::1/128"
    monkeypatch.setenv("MERLIN_ENDPOINTS_ALLOW_NETWORKS", "10.0.0.1/8")
    with pytest.raises(ValueError, match=r"'10\.0\.0\.1/8' is not a network such as 10\.0\.0\.0/8"):
        EndpointsSettings()
    with pytest.raises(NetworksUnreadable):
        AllowedNetworks.parse("intranet")
    # The shorthand for every inner network still keeps metadata addresses out.
    monkeypatch.delenv("MERLIN_ENDPOINTS_ALLOW_NETWORKS")
    monkeypatch.setenv("MERLIN_ENDPOINTS_ALLOW_PRIVATE", "true")
    wide = EndpointsSettings().allowed_networks
    assert wide.allows(ipaddress.ip_address("192.168.1.1"))
    assert not wide.allows(ipaddress.ip_address("169.254.169.254"))
