"""The SSRF guard: address tables, numeric host spellings, resolver and socket layers.

Public addresses are only ever checked as data: no test connects anywhere but 127.0.0.1,
and the ``connects`` tripwire fails any connect to another address.
"""

from __future__ import annotations

import asyncio.selector_events
import socket
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from notifiers import webhook as webhook_module
from notifiers.base import PermanentDeliveryError, TransientDeliveryError
from notifiers.settings import WebhookSettings
from notifiers.ssrf import (
    BlockedSocketError,
    GuardedResolver,
    check_address,
    classify,
    guarded_socket_factory,
    parse_host,
)
from notifiers.webhook import WebhookNotifier
from notifiers.webhook_signing import new_secret
from schemas.delivery import Delivery
from schemas.events import new_event
from schemas.targets import WebhookTarget
from tests.fakes.webhook import WebhookSink

# The sink fixtures, here until tests/conftest.py offers them to every module.

BLOCKED = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.255",
    "169.254.169.254",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible (deprecated) form
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::1",  # local-use NAT64
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "2001::1",  # Teredo
    "2001:db8::1",
    "3fff::1",
    "100::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",
    "ff02::1",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.128.0.1",  # just above CGNAT
    "172.32.0.1",  # just above 172.16/12
    "2606:4700:4700::1111",
    "2a00:1450:4001:82a::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]


@pytest.mark.parametrize("ip", BLOCKED)
def test_blocked_addresses_are_refused(ip: str) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        check_address(ip)
    assert caught.value.reason == "ssrf"
    assert caught.value.disable_target is True


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip: str) -> None:
    assert classify(ip) is None
    check_address(ip_address(ip))


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("::ffff:127.0.0.1", False),  # only the plain spellings
        ("10.0.0.1", False),
        ("169.254.169.254", False),
        ("fe80::1", False),
    ],
)
def test_allow_loopback_permits_loopback_only(ip: str, allowed: bool) -> None:
    assert (classify(ip, allow_loopback=True) is None) is allowed


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", IPv4Address("127.0.0.1")),
        ("2130706433", IPv4Address("127.0.0.1")),
        ("0x7f000001", IPv4Address("127.0.0.1")),
        ("0X7F000001", IPv4Address("127.0.0.1")),
        ("017700000001", IPv4Address("127.0.0.1")),
        ("127.1", IPv4Address("127.0.0.1")),
        ("0x7f.1", IPv4Address("127.0.0.1")),
        ("0177.0.0.01", IPv4Address("127.0.0.1")),
        ("127.0.1", IPv4Address("127.0.0.1")),
        ("169.254.43518", IPv4Address("169.254.169.254")),
        ("0xa9.0xfe.0xa9.0xfe", IPv4Address("169.254.169.254")),
        ("127.0.0.1.", IPv4Address("127.0.0.1")),
        ("0", IPv4Address("0.0.0.0")),
        ("[::1]", IPv6Address("::1")),
        ("[::ffff:169.254.169.254]", IPv6Address("::ffff:a9fe:a9fe")),
        ("fe80::1", IPv6Address("fe80::1")),
        ("example.org", None),
        ("localhost", None),
        ("hooks.example.org.", None),
        ("0x7f.example", None),
        ("0x1g", None),  # not a number, so a name (as browsers read it)
    ],
)
def test_parse_host(host: str, expected: IPv4Address | IPv6Address | None) -> None:
    assert parse_host(host) == expected


@pytest.mark.parametrize(
    "host",
    ["256.0.0.1", "1.2.3.999", "4294967296", "08", "1.09", "1.2.3.4.5", "a.1", "[::1", "1::2::3"],
)
def test_parse_host_refuses_malformed_numbers(host: str) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        parse_host(host)
    assert caught.value.reason == "ssrf"


class FakeResolver(AbstractResolver):
    """Answers from a table: no DNS in unit tests."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=addr,
                port=port,
                family=socket.AF_INET6 if ":" in addr else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for addr in self.answers[host]
        ]

    async def close(self) -> None:
        pass


async def test_resolver_returns_vetted_addresses() -> None:
    inner = FakeResolver({"hooks.example.org": ["93.184.215.14", "2606:4700:4700::1111"]})
    resolver = GuardedResolver(resolver=inner)
    results = await resolver.resolve("hooks.example.org", 443)
    assert [r["host"] for r in results] == ["93.184.215.14", "2606:4700:4700::1111"]


@pytest.mark.parametrize("bad", ["10.0.0.7", "169.254.169.254", "::1", "::ffff:127.0.0.1"])
async def test_resolver_refuses_a_name_with_any_forbidden_address(bad: str) -> None:
    inner = FakeResolver({"rebind.example.org": ["93.184.215.14", bad]})
    with pytest.raises(PermanentDeliveryError) as caught:
        await GuardedResolver(resolver=inner).resolve("rebind.example.org", 443)
    assert caught.value.reason == "ssrf"
    assert caught.value.disable_target is True


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "017700000001", "127.1"])
async def test_resolver_reads_numeric_hosts_itself(host: str) -> None:
    inner = FakeResolver({})
    with pytest.raises(PermanentDeliveryError):
        await GuardedResolver(resolver=inner).resolve(host, 80)
    results = await GuardedResolver(allow_loopback=True, resolver=inner).resolve(host, 80)
    assert [r["host"] for r in results] == ["127.0.0.1"]
    assert inner.asked == []  # never handed to a resolver as a name


def test_socket_factory_refuses_forbidden_socket_addresses() -> None:
    info: Any = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80))
    with pytest.raises(BlockedSocketError):
        guarded_socket_factory()(info)
    guarded_socket_factory(allow_loopback=True)(info).close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address a socket connects to; a connect outside loopback fails unsent."""
    attempts: list[str] = []
    loop_class = asyncio.selector_events.BaseSelectorEventLoop
    original = loop_class.sock_connect

    async def tripwire(self: Any, sock: socket.socket, address: Any) -> None:
        attempts.append(address[0])
        if address[0] not in ("127.0.0.1", "::1"):
            raise ConnectionRefusedError(f"test tripwire: no connection to {address[0]}")
        await original(self, sock, address)

    monkeypatch.setattr(loop_class, "sock_connect", tripwire)
    return attempts


def delivery_to(url: str) -> Delivery:
    event = new_event(
        "milestone", "somerville", "farmers-market", {"title": "Opens", "status": "reached"}
    )
    return Delivery(event=event, recipient="ana", target=WebhookTarget(url=url))


def notifier(*, allow_loopback: bool) -> WebhookNotifier:
    settings = WebhookSettings(allow_loopback=allow_loopback, timeout=5, secret=new_secret())
    return WebhookNotifier(settings)


# host spelling -> what allow_loopback=True does: "sent" (reaches the sink), "refused"
# (still refused by the guard), or "passed" (the guard lets it through; nothing listens).
SSRF_TABLE = [
    ("127.0.0.1", "sent"),
    ("[::ffff:169.254.169.254]", "refused"),
    ("2130706433", "sent"),
    ("0x7f000001", "sent"),
    ("127.1", "sent"),
    ("0x7f.1", "sent"),
    ("017700000001", "sent"),
    ("10.0.0.1", "refused"),
    ("192.168.1.1", "refused"),
    ("172.16.0.1", "refused"),
    ("100.64.0.1", "refused"),
    ("169.254.169.254", "refused"),
    ("[::1]", "passed"),
    ("[fe80::1]", "refused"),
    ("[fc00::1]", "refused"),
    ("0.0.0.0", "refused"),
    ("[::ffff:127.0.0.1]", "refused"),
    ("localhost", "sent"),
]


@pytest.mark.parametrize(("host", "with_loopback"), SSRF_TABLE)
async def test_forbidden_url_makes_no_connection(
    host: str, with_loopback: str, webhook_sink: WebhookSink, connects: list[str]
) -> None:
    async with notifier(allow_loopback=False) as n:
        with pytest.raises(PermanentDeliveryError) as caught:
            await n.send(delivery_to(webhook_sink.url_for(host=host)))
    assert caught.value.reason == "ssrf"
    assert caught.value.disable_target is True
    assert webhook_sink.connections == 0
    assert connects == []


@pytest.mark.parametrize(("host", "with_loopback"), SSRF_TABLE)
async def test_same_url_with_allow_loopback(
    host: str, with_loopback: str, webhook_sink: WebhookSink, connects: list[str]
) -> None:
    async with notifier(allow_loopback=True) as n:
        send = n.send(delivery_to(webhook_sink.url_for(host=host)))
        if with_loopback == "sent":
            result = await send
            assert result.provider_id
            assert len(webhook_sink.wait_for(1)) == 1
        elif with_loopback == "passed":
            with pytest.raises(TransientDeliveryError):
                await send
            assert connects  # the guard let the connect happen
            assert webhook_sink.connections == 0
        else:
            with pytest.raises(PermanentDeliveryError) as caught:
                await send
            assert caught.value.reason == "ssrf"
            assert webhook_sink.connections == 0
            assert connects == []


async def test_connect_time_check_holds_without_the_early_check(
    monkeypatch: pytest.MonkeyPatch, webhook_sink: WebhookSink, connects: list[str]
) -> None:
    # aiohttp skips the resolver for literal IPs: the socket factory must catch them.
    no_early_check: Callable[[str], None] = lambda host: None  # noqa: E731
    monkeypatch.setattr(webhook_module, "parse_host", no_early_check)
    async with notifier(allow_loopback=False) as n:
        with pytest.raises(PermanentDeliveryError) as caught:
            await n.send(delivery_to(webhook_sink.url_for()))
    assert caught.value.reason == "ssrf"
    assert caught.value.disable_target is True
    assert webhook_sink.connections == 0
    assert connects == []


async def test_socket_factory_alone_stops_a_literal_ip(webhook_sink: WebhookSink) -> None:
    connector = aiohttp.TCPConnector(socket_factory=guarded_socket_factory())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            async with session.get(webhook_sink.url):
                pass
    assert isinstance(caught.value.os_error, BlockedSocketError)
    assert webhook_sink.connections == 0
