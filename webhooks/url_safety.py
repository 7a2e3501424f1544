"""Where an endpoint may send: public addresses, and the inner networks an operator lists by name.

An endpoint's URL is checked when it is defined (its name resolved) and again
whenever a connection is made (``addresses``), so a name that later
resolves to an inner address (DNS rebinding) is refused too. IPv4 addresses
carried inside IPv6 ones (mapped, compatible, translated, 6to4, NAT64, Teredo)
are checked as the IPv4 address they reach; the local-use NAT64 prefix, whose
embedding depends on each network's prefix length, is refused whole.

Inner networks are allowed by name (``MERLIN_ENDPOINTS_ALLOW_NETWORKS``), never all at once:
link-local addresses and the clouds' metadata services, where a webhook would read a machine's
credentials, stay refused unless a listed network lies inside them (``0.0.0.0/0`` or
``10.0.0.0/8`` does not open ``169.254.169.254``; ``169.254.169.254/32`` does).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from pydantic import HttpUrl

from domain.errors import MerlinError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# RFC 8215: NAT64 within one network, with a prefix length (and so an embedding) of its own choice.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
_COMPATIBLE = ipaddress.ip_network("::/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT's IPv4-translated addresses (RFC 2765)
# Instance metadata, where a request reads the machine's credentials: AWS, GCP and Azure on
# 169.254.169.254 (and AWS's IPv6 one), ECS tasks, Alibaba Cloud, and Azure's platform address.
_METADATA: tuple[Network, ...] = tuple(
    ipaddress.ip_network(text)
    for text in ("169.254.169.254/32", "169.254.170.2/32", "fd00:ec2::254/128", "100.100.100.200/32",
                 "168.63.129.16/32")
)  # fmt: skip
# Opened only by a listed network inside one of them, never by a wider one around them. Local-use
# NAT64 with them: it may reach any IPv4 address, the metadata service's included.
_GUARDED: tuple[Network, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    _LOCAL_NAT64,
    *_METADATA,
)


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
    if any(address in network for network in _METADATA):
        return "a cloud metadata service"
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


class NetworksUnreadable(MerlinError, ValueError):
    """An allow-list of networks that does not parse."""


@dataclass(frozen=True)
class AllowedNetworks:
    """The inner networks endpoints may reach besides public addresses; none by default."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowedNetworks:
        """From ``10.0.0.0/8,127.0.0.0/8,::1/128`` (an address alone is its own /32 or /128)."""
        networks = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=True))
            except ValueError as exc:
                raise NetworksUnreadable(f"{item!r} is not a network such as 10.0.0.0/8: {exc}") from None
        return cls(tuple(networks))

    def __str__(self) -> str:
        return ",".join(str(network) for network in self.networks) or "none"

    def allows(self, address: Address) -> bool:
        """Whether a listed network holds ``address``, or the IPv4 address it carries (where it goes)."""
        inner = _carried(address) if isinstance(address, ipaddress.IPv6Address) else None
        if inner is not None:
            return self.allows(inner)
        return any(self._holds(network, address) for network in self.networks)

    @staticmethod
    def _holds(network: Network, address: Address) -> bool:
        if address not in network:
            return False
        guards = [guard for guard in _GUARDED if address in guard]
        return all(network.version == guard.version and network.subnet_of(guard) for guard in guards)  # type: ignore[arg-type]


NO_INNER_NETWORKS = AllowedNetworks()
LOOPBACK = AllowedNetworks.parse("127.0.0.0/8,::1/128")


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_literal(host: str, allowed: AllowedNetworks = NO_INNER_NETWORKS) -> None:
    """Raise UnsafeAddress if ``host`` is an address merlin does not send to (a name passes)."""
    literal = _literal(host)
    if literal is not None:
        _check(host.strip("[]"), [str(literal)], allowed)


def _check(host: str, addresses: list[str], allowed: AllowedNetworks) -> None:
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # without an IPv6 zone
        reason = refusal(address)
        if reason is not None and not allowed.allows(address):
            shown = host if _literal(host) == address else f"{host} resolves to {address}, which"
            listed = "" if not allowed.networks else f", outside MERLIN_ENDPOINTS_ALLOW_NETWORKS ({allowed})"
            raise UnsafeAddress(f"{shown} is {reason}{listed}")


async def check_host(host: str, allowed: AllowedNetworks = NO_INNER_NETWORKS) -> None:
    """Raise UnsafeAddress unless ``host`` (a name or an address) reaches only addresses allowed."""
    try:
        await addresses(host, 0, allowed)
    except socket.gaierror as exc:
        raise UnsafeAddress(f"{host} does not resolve: {exc.strerror}") from None


async def check_url(url: HttpUrl, allowed: AllowedNetworks) -> None:
    """``check_host`` of ``url``'s host."""
    await check_host(url.host or "", allowed)


async def addresses(host: str, port: int, allowed: AllowedNetworks) -> list[tuple[socket.AddressFamily, str]]:
    """Where a new connection to ``host`` may go: every address it resolves to, once all are checked.

    Raise UnsafeAddress if any is one merlin does not send to (public, or in ``allowed``), and
    OSError if the name does not resolve.
    """
    literal = _literal(host)
    if literal is not None:
        check_literal(host, allowed)
        return [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    places = list(dict.fromkeys((socket.AddressFamily(info[0]), str(info[4][0])) for info in found))
    _check(host, [address for _, address in places], allowed)
    return places
