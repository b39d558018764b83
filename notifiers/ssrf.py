"""SSRF guard for outgoing webhooks: only public unicast addresses are ever connected to.

A webhook URL comes from a user, so the hub must not let it reach the cloud metadata
service, the loopback interface or the private network the hub runs in. The guard has
three layers, all built on :func:`check_address`:

* :func:`parse_host` reads a URL host that is an address in any spelling (``127.1``,
  ``2130706433``, ``0x7f.1``, ``017700000001``, ``[::ffff:127.0.0.1]``), so a numeric
  host is checked as the address it denotes, never handed to a resolver as a "name".
* :class:`GuardedResolver` is the connector's resolver: it resolves a name with the
  system resolver, checks **every** address and returns only vetted addresses (a name
  with one forbidden address is refused as a whole). The connector connects to exactly
  what the resolver returned, so there is no gap between check and connect in which DNS
  could change its answer (DNS rebinding).
* :func:`guarded_socket_factory` checks the socket address right before the connect.
  aiohttp skips the resolver for literal IP hosts; this catches them, and anything else
  that might bypass the resolver.

:func:`guarded_connector` wires the last two into an :class:`aiohttp.TCPConnector`. Use
it with ``trust_env=False`` (the default) so no proxy from the environment sits between.

Refusals raise :class:`~notifiers.base.PermanentDeliveryError` with ``reason="ssrf"`` and
``disable_target=True``. ``allow_loopback`` exists for tests only: it permits
``127.0.0.0/8`` and ``::1`` and nothing else (not ``0.0.0.0``, not mapped forms).
"""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import AddrInfoType, SocketFactoryType

from notifiers.base import PermanentDeliveryError

IPAddress = IPv4Address | IPv6Address

_V4_BLOCKED: Final[tuple[tuple[IPv4Network, str], ...]] = tuple(
    (IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "unspecified"),  # 0.0.0.0 reaches the local host on Linux
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # includes 255.255.255.255 broadcast
    )
)
_V6_BLOCKED: Final[tuple[tuple[IPv6Network, str], ...]] = tuple(
    (IPv6Network(net), why)
    for net, why in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments (Teredo, benchmarking, ORCHID)"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)
_V6_IPV4_COMPATIBLE: Final = IPv6Network("::/96")
_V6_NAT64: Final = IPv6Network("64:ff9b::/96")
_LOOPBACK_V4: Final = IPv4Network("127.0.0.0/8")
_LOOPBACK_V6: Final = IPv6Address("::1")
_NUMERIC_FLAGS: Final = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


def _embedded_ipv4(addr: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64)."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _V6_NAT64 or (addr in _V6_IPV4_COMPATIBLE and int(addr) > 1):
        return IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def classify(ip: IPAddress | str, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` must not be connected to, or ``None`` if it is a public unicast address.

    Args:
        ip: an address, or its text in the standard notation (``"::ffff:7f00:1"``).
        allow_loopback: permit ``127.0.0.0/8`` and ``::1`` (tests only).

    Raises:
        ValueError: ``ip`` is text that is not an IP address.
    """
    addr = ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, IPv6Address):
        addr = IPv6Address(int(addr))  # drop a zone id (``%eth0``): it changes equality
        if allow_loopback and addr == _LOOPBACK_V6:
            return None
        inner = _embedded_ipv4(addr)
        if inner is not None:
            # The mapped forms reach the same host as the IPv4 address: judge that one,
            # without the loopback exception (tests use the plain spelling).
            why = classify(inner)
            return None if why is None else f"{why} (embedded in {addr})"
        for net6, why in _V6_BLOCKED:
            if addr in net6:
                return why
    else:
        if allow_loopback and addr in _LOOPBACK_V4:
            return None
        for net4, why in _V4_BLOCKED:
            if addr in net4:
                return why
    # The standard library's registry view is the safety net for anything not listed.
    return None if addr.is_global and not addr.is_multicast else "not globally routable"


def check_address(ip: IPAddress | str, *, allow_loopback: bool = False) -> None:
    """Refuse an address that is not public unicast.

    Args:
        ip: the address about to be connected to.
        allow_loopback: permit ``127.0.0.0/8`` and ``::1`` (tests only).

    Raises:
        PermanentDeliveryError: with ``reason="ssrf"`` and ``disable_target=True``.
        ValueError: ``ip`` is text that is not an IP address.
    """
    why = classify(ip, allow_loopback=allow_loopback)
    if why is not None:
        raise PermanentDeliveryError(
            f"refusing to connect to {ip}: {why} address", reason="ssrf", disable_target=True
        )


def _ipv4_number(part: str) -> int | None:
    """One part of a numeric IPv4 host (decimal, ``0x`` hex or ``0`` octal), or None."""
    if not part.isascii():
        return None
    try:
        if part[:2].lower() == "0x":
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part, 10) if part.isdigit() else None
    except ValueError:
        return None


def parse_host(host: str) -> IPAddress | None:
    """The address a URL host denotes, or ``None`` if the host is a name to resolve.

    IPv4 hosts are read the way browsers and ``inet_aton`` read them: one to four parts,
    each decimal, ``0x`` hexadecimal or ``0``-prefixed octal, the last part filling the
    remaining bytes (``127.1``, ``2130706433``, ``0x7f.1``, ``017700000001``). IPv6 hosts
    may be bracketed.

    Raises:
        PermanentDeliveryError: the host ends in a number but is no valid address
            (``reason="ssrf"``: never let a resolver guess what it means).
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return IPv6Address(text)
        except ValueError:
            raise _malformed(host) from None
    parts = text.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # a trailing dot (fully qualified form)
    last_label = parts[-1]
    if not (last_label.isascii() and last_label.isdigit()) and _ipv4_number(last_label) is None:
        return None  # a name: the last label is not a number
    numbers = [_ipv4_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise _malformed(host)
    *head, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        raise _malformed(host)
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return IPv4Address(value)


def _malformed(host: str) -> PermanentDeliveryError:
    return PermanentDeliveryError(
        f"host {host!r} looks numeric but is no valid IP address",
        reason="ssrf",
        disable_target=True,
    )


def _family(addr: IPAddress) -> int:
    return socket.AF_INET6 if isinstance(addr, IPv6Address) else socket.AF_INET


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver and returns only vetted addresses.

    Args:
        allow_loopback: permit ``127.0.0.0/8`` and ``::1`` (tests only).
        resolver: the resolver to ask for names; the system resolver (``getaddrinfo``
            in a thread) by default.
    """

    def __init__(
        self, *, allow_loopback: bool = False, resolver: AbstractResolver | None = None
    ) -> None:
        self._allow_loopback = allow_loopback
        self._inner = resolver or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and return its addresses, all of them public.

        Raises:
            PermanentDeliveryError: ``reason="ssrf"``: the host is, or resolves to (even
                among other addresses), a forbidden address.
            OSError: the name does not resolve.
        """
        literal = parse_host(host)
        if literal is not None:
            check_address(literal, allow_loopback=self._allow_loopback)
            return [_result(host, literal, port)]
        results = await self._inner.resolve(host, port, family)
        for result in results:
            why = classify(result["host"], allow_loopback=self._allow_loopback)
            if why is not None:
                raise PermanentDeliveryError(
                    f"refusing {host!r}: it resolves to {result['host']}, a {why} address",
                    reason="ssrf",
                    disable_target=True,
                )
        return results

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()


def _result(host: str, addr: IPAddress, port: int) -> ResolveResult:
    return ResolveResult(
        hostname=host,
        host=str(addr),
        port=port,
        family=_family(addr),
        proto=0,
        flags=_NUMERIC_FLAGS,
    )


class BlockedSocketError(PermissionError):
    """A connect to a forbidden address was stopped at the socket.

    Only an ``OSError`` crosses aiohttp's connection code intact, so the socket factory
    raises this one; aiohttp wraps it in :class:`aiohttp.ClientConnectorError`, and the
    notifier translates that back into a ``PermanentDeliveryError(reason="ssrf")``.
    """


def guarded_socket_factory(*, allow_loopback: bool = False) -> SocketFactoryType:
    """A socket factory for aiohttp that refuses forbidden socket addresses.

    Args:
        allow_loopback: permit ``127.0.0.0/8`` and ``::1`` (tests only).
    """

    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        why = classify(sockaddr[0], allow_loopback=allow_loopback)
        if why is not None:
            raise BlockedSocketError(f"refusing to connect to {sockaddr[0]}: {why} address")
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def guarded_connector(*, allow_loopback: bool = False, limit: int = 100) -> aiohttp.TCPConnector:
    """A TCP connector that connects to vetted public addresses only.

    Must be created inside a running event loop, like any aiohttp connector.

    Args:
        allow_loopback: permit ``127.0.0.0/8`` and ``::1`` (tests only).
        limit: the most connections open at once.
    """
    asyncio.get_running_loop()  # fail here, not at first use, when called outside a loop
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_loopback=allow_loopback),
        socket_factory=guarded_socket_factory(allow_loopback=allow_loopback),
        limit=limit,
    )
