"""The roles of deploy/nats/accounts.conf, on real servers.

Each test runs twice: on a server started from deploy/nats/single.conf, and on one whose
accounts come from deploy/k8s/nats-values.yaml as the Helm chart renders them, so the two
copies of the roles cannot drift apart. What each user may do is checked by doing it: the
hub declares the whole topology and works a consumer, the api ingests and edits tokens but
cannot destroy, a data system publishes only its own metrics, a partner only listens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.bus import EVENTS, KV_TOKENS, Bus, NatsSettings
from tests.deploy.nats_layout import NatsNode, passwords, prepare, prepare_helm


@pytest.fixture(scope="module", params=["single.conf", "helm values"])
def single(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[NatsNode, dict[str, str]]]:
    pw = passwords()
    tmp = tmp_path_factory.mktemp("roles")
    node = prepare(tmp, pw)[0] if request.param == "single.conf" else prepare_helm(tmp, pw)
    node.start()
    try:
        node.wait_ready()
        yield node, pw
    finally:
        node.stop()


class Conn:
    """A connection as one user, with the asynchronous errors the server sent it."""

    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors

    async def refused(self, needle: str, timeout: float = 5.0) -> None:
        """Wait (bounded) for a permissions violation mentioning ``needle``."""
        deadline = time.monotonic() + timeout
        needle = needle.lower()  # nats-py lowercases the server's message
        while not any("permissions violation" in e and needle in e.lower() for e in self.errors):
            assert time.monotonic() < deadline, f"not refused: {needle!r}; errors {self.errors}"
            await asyncio.sleep(0.02)


Connect = Callable[[str], Awaitable[Conn]]


@pytest.fixture
async def connect(single: tuple[NatsNode, dict[str, str]]) -> AsyncIterator[Connect]:
    node, pw = single
    opened: list[Client] = []

    async def open_as(user: str) -> Conn:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(
            node.url,
            user=user,
            password=pw[user],
            error_cb=on_error,
            connect_timeout=2,
            max_reconnect_attempts=0,
        )
        opened.append(nc)
        return Conn(nc, errors)

    yield open_as
    for nc in opened:
        await nc.close()


@pytest.fixture
async def hub(single: tuple[NatsNode, dict[str, str]]) -> AsyncIterator[Bus]:
    node, pw = single
    bus = await Bus.connect(node.url, NatsSettings(url=node.url, user="hub", password=pw["hub"]))
    await bus.ensure_topology()  # the whole topology, as the hub user
    yield bus
    await bus.close()


async def test_hub_declares_the_topology_and_works_the_streams(hub: Bus) -> None:
    ack = await hub.js.publish("impact.hubtest.update.x", b"{}", headers={"Nats-Msg-Id": "h-1"})
    assert ack.stream == EVENTS
    await hub.js.publish("deliver.email.hubtest", b"{}")
    sub = await hub.js.pull_subscribe_bind("email", stream="DELIVERIES")
    msgs = await sub.fetch(1, timeout=5)
    await msgs[0].ack_sync()
    kv = await hub.kv(KV_TOKENS)
    await kv.put("t1", b"hashed")
    assert (await kv.get("t1")).value == b"hashed"
    watcher = await kv.watchall()
    assert (await watcher.updates(timeout=5)).key == "t1"
    await watcher.stop()
    await hub.js.purge_stream("DIGESTS", subject="digest.nobody")


async def test_api_ingests_and_edits_tokens_but_cannot_destroy(hub: Bus, connect: Connect) -> None:
    api = await connect("api")
    js = api.nc.jetstream(timeout=1)
    ack = await js.publish("impact.apitest.update.x", b"{}", headers={"Nats-Msg-Id": "a-1"})
    assert ack.stream == EVENTS
    kv = await js.key_value(KV_TOKENS)
    await kv.put("t2", b"hashed")
    assert (await kv.get("t2")).value == b"hashed"

    with pytest.raises(nats.errors.TimeoutError):
        await js.delete_stream(EVENTS)
    await api.refused("$JS.API.STREAM.DELETE.EVENTS")
    await api.nc.publish("deliver.email.apitest", b"{}")
    await api.refused("deliver.email.apitest")
    assert (await hub.js.stream_info(EVENTS)).config.name == EVENTS


async def test_data_system_publishes_only_its_own_metrics(hub: Bus, connect: Connect) -> None:
    system = await connect("system-somerville")
    js = system.nc.jetstream(timeout=2)
    ack = await js.publish("impact.somerville.metric.bmi", b"{}", headers={"Nats-Msg-Id": "s-1"})
    assert ack.stream == EVENTS  # the ack crossed back from HUB to EXT
    again = await js.publish("impact.somerville.metric.bmi", b"{}", headers={"Nats-Msg-Id": "s-1"})
    assert again.duplicate
    assert again.seq == ack.seq

    for subject in (
        "impact.cambridge.metric.bmi",
        "impact.somerville.milestone.x",
        "deliver.email.somerville",
        "$KV.tokens.t1",
    ):
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(subject, b"{}", timeout=0.5)
        await system.refused(subject)

    # Replies meant for the hub are out of reach: its inboxes live in another account.
    peek: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        peek.append(msg)

    await system.nc.subscribe("_INBOX.>", cb=on_msg)
    await system.nc.flush()
    kv = await hub.kv(KV_TOKENS)
    await kv.put("secret", b"token-hash")
    assert (await kv.get("secret")).value == b"token-hash"
    await system.nc.flush()
    assert not [m for m in peek if b"token-hash" in m.data]
    await system.nc.subscribe("impact.>")
    await system.refused('subscription to "impact.>"')


async def test_partner_reads_every_event_and_publishes_nothing(hub: Bus, connect: Connect) -> None:
    partner = await connect("partner")
    got: list[str] = []

    async def on_msg(msg: Msg) -> None:
        got.append(msg.subject)

    await partner.nc.subscribe("impact.>", cb=on_msg)
    await partner.nc.flush()
    system = await connect("system-somerville")
    await system.nc.jetstream(timeout=2).publish("impact.somerville.metric.steps", b"{}")
    await hub.js.publish("impact.hubtest.milestone.launch", b"{}")

    want = ["impact.somerville.metric.steps", "impact.hubtest.milestone.launch"]
    deadline = time.monotonic() + 5
    while sorted(got) != sorted(want):
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.02)

    await partner.nc.publish("impact.somerville.metric.bmi", b"{}")
    await partner.refused("impact.somerville.metric.bmi")
    await partner.nc.subscribe("deliver.>")
    await partner.refused('subscription to "deliver.>"')
    assert sorted(got) == sorted(want)  # each event once: no echo through the imports


async def test_a_wrong_password_is_refused(single: tuple[NatsNode, dict[str, str]]) -> None:
    node, pw = single
    nc = Client()
    try:
        with pytest.raises((nats.errors.Error, OSError)):
            await nc.connect(
                node.url,
                user="hub",
                password=pw["api"],
                connect_timeout=2,
                allow_reconnect=False,
            )
    finally:
        await nc.close()  # nats-py leaves the socket open when the handshake is refused
