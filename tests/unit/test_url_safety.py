"""Which addresses an endpoint may reach: refused by kind, IPv4 inside IPv6 included."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest

from webhooks.url_safety import UnsafeAddress, addresses, check_host, refusal


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "link-local"),
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
        ("64:ff9b::a9fe:a9fe", "link-local (carried in 64:ff9b::a9fe:a9fe)"),
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
        await addresses("hooks.example", 443, allow_private=False)
    assert await addresses("hooks.example", 443, allow_private=True) == [
        (socket.AF_INET, "93.184.216.34"),
        (socket.AF_INET, "10.0.0.1"),
    ]


async def test_at_connect_time_an_inner_literal_is_refused_and_a_name_is_resolved() -> None:
    with pytest.raises(UnsafeAddress, match="is loopback"):
        await addresses("127.0.0.1", 80, allow_private=False)
    with pytest.raises(UnsafeAddress, match=r"localhost resolves to .* loopback"):
        await addresses("localhost", 80, allow_private=False)
    assert (socket.AF_INET, "127.0.0.1") in await addresses("localhost", 80, allow_private=True)
    assert await addresses("::1", 80, allow_private=True) == [(socket.AF_INET6, "::1")]
