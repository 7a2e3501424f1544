"""Where an endpoint may send: public addresses only, unless private ones are allowed (development, tests).

An endpoint's URL is checked when it is defined (its name resolved) and again
whenever a connection is made (``addresses``), so a name that later
resolves to an inner address (DNS rebinding) is refused too. IPv4 addresses
carried inside IPv6 ones (mapped, compatible, translated, 6to4, NAT64, Teredo)
are checked as the IPv4 address they reach; the local-use NAT64 prefix, whose
embedding depends on each network's prefix length, is refused whole.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from pydantic import HttpUrl

from domain.errors import MerlinError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# RFC 8215: NAT64 within one network, with a prefix length (and so an embedding) of its own choice.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
_COMPATIBLE = ipaddress.ip_network("::/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT's IPv4-translated addresses (RFC 2765)


class UnsafeAddress(MerlinError, ValueError):
    """The URL's host is, or resolves to, an address merlin does not send to."""


def _carried(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches, if it carries one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _TRANSLATED or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: Address) -> str | None:
    """Why merlin does not send to ``address``; None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address in _LOCAL_NAT64:
        return "local-use NAT64, which may reach any inner IPv4 address"
    if isinstance(address, ipaddress.IPv6Address) and (inner := _carried(address)) is not None:
        reason = refusal(inner)
        return None if reason is None else f"{reason} (carried in {address})"
    for kind, refused in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("not a public address", not address.is_global),
    ):
        if refused:
            return kind
    return None


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_literal(host: str) -> None:
    """Raise UnsafeAddress if ``host`` is an address merlin does not send to (a name passes)."""
    literal = _literal(host)
    if literal is not None:
        _check(host.strip("[]"), [str(literal)])


def _check(host: str, addresses: list[str]) -> None:
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # without an IPv6 zone
        reason = refusal(address)
        if reason is not None:
            shown = host if _literal(host) == address else f"{host} resolves to {address}, which"
            raise UnsafeAddress(f"{shown} is {reason}")


async def check_host(host: str) -> None:
    """Raise UnsafeAddress unless ``host`` (a name or an address) reaches only public addresses."""
    try:
        await addresses(host, 0, allow_private=False)
    except socket.gaierror as exc:
        raise UnsafeAddress(f"{host} does not resolve: {exc.strerror}") from None


async def check_url(url: HttpUrl, allow_private: bool) -> None:
    """``check_host`` of ``url``'s host, unless inner addresses are allowed."""
    if not allow_private:
        await check_host(url.host or "")


async def addresses(host: str, port: int, allow_private: bool) -> list[tuple[socket.AddressFamily, str]]:
    """Where a new connection to ``host`` may go: every address it resolves to, once all are checked.

    Raise UnsafeAddress if any is one merlin does not send to (unless ``allow_private``), and
    OSError if the name does not resolve.
    """
    literal = _literal(host)
    if literal is not None:
        if not allow_private:
            check_literal(host)
        return [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    places = list(dict.fromkeys((socket.AddressFamily(info[0]), str(info[4][0])) for info in found))
    if not allow_private:
        _check(host, [address for _, address in places])
    return places
