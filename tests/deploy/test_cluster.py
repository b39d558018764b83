"""The 3-node cluster of deploy/nats/cluster/, run from its own config files.

Each node is a nats-server child process started from a copy of the deploy configs with
free ports and a temp store (see ``tests/deploy/nats_layout.py``), stopped by its PID.
The stream leader is SIGKILLed while the hub publishes; every acknowledged event must be
in the stream exactly once, and publishing must resume within 10 s.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from schemas.errors import BusUnavailableError
from services.bus import EVENTS, Bus, NatsSettings
from tests.deploy.nats_layout import NatsNode, passwords, prepare

pytestmark = pytest.mark.e2e
T = TypeVar("T")

EVENTS_TOTAL = 2000
IN_FLIGHT = 64  # concurrent publishers: pipelined, as the hub's api and router publish
KILL_AFTER = EVENTS_TOTAL // 3
ATTEMPT_TIMEOUT_S = 2.0  # explicit: nats-py's default would give up during an election
RESUME_BOUND_S = 10.0  # correctness bound (elections take ~5 s here), not a benchmark
PUBLISH_DEADLINE_S = 40.0
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 0.4  # also the resolution of the resume measurement


@dataclass
class Cluster:
    nodes: list[NatsNode]
    pw: dict[str, str]

    def node(self, server_name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == server_name)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes if n.alive]

    def wait_meta_leader(self, timeout: float = 20.0) -> str:
        """Poll every live node's /jsz until all agree on a meta leader of the full group."""
        live = [n for n in self.nodes if n.alive]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            metas = [(n.monitor("/jsz") or {}).get("meta_cluster") or {} for n in live]
            leaders = {m.get("leader") for m in metas if isinstance(m, dict)}
            sizes = {m.get("cluster_size") for m in metas if isinstance(m, dict)}
            healthy = all(n.monitor("/healthz") is not None for n in live)
            if healthy and len(leaders) == 1 and None not in leaders and sizes == {len(self.nodes)}:
                return str(leaders.pop())
            time.sleep(0.05)
        raise AssertionError(f"no meta leader in {timeout}s: {[n.tail(3) for n in live]}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    pw = passwords()
    _, nodes = prepare(tmp_path_factory.mktemp("cluster"), pw)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        c = Cluster(nodes, pw)
        c.wait_meta_leader()
        yield c
    finally:
        for node in nodes:
            node.stop()


async def _hub(cluster: Cluster) -> Bus:
    url = cluster.urls[0]
    # by its env name: NatsSettings ignores a `stream_replicas=` keyword (validation alias)
    replicas = {"IMPACTBUS_STREAM_REPLICAS": 3}
    settings = NatsSettings(
        url=url, user="hub", password=cluster.pw["hub"], publish_timeout_s=5, **replicas
    )
    assert settings.stream_replicas == 3
    return await Bus.connect(url, settings, name="deploy-test-hub")


async def _retry(what: str, op: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """Run ``op()`` until it succeeds or the deadline passes.

    The JetStream API of a young cluster, or one that just lost a node, can time out for
    a few seconds (meta leader busy); the operations retried here are idempotent.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await op()
        except (TimeoutError, nats.errors.Error, BusUnavailableError):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout}s") from None
            await asyncio.sleep(0.2)


async def _wait_replicas(js: JetStreamContext, stream: str, timeout: float = 20.0) -> str:
    """Poll stream info until it has a leader and every peer is current; the leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = await js.stream_info(stream)
        except (TimeoutError, nats.errors.Error):
            info = None
        c = info.cluster if info else None
        peers = (c.replicas or []) if c else []
        if c and c.leader and len(peers) == 2 and all(p.current and not p.offline for p in peers):
            return c.leader
        await asyncio.sleep(0.1)
    raise AssertionError(f"{stream}: replicas not current in {timeout}s")


@dataclass
class PublishLog:
    """What the publishers saw: the ack of every event, when each attempt ran."""

    acked: dict[str, int] = field(default_factory=dict)  # msg id -> stream sequence
    attempts: int = 0
    duplicates_acked: int = 0
    #: (started, acked) monotonic times of each successful attempt
    times: list[tuple[float, float]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


async def _publish_all(js: JetStreamContext, ids: list[str], log: PublishLog) -> None:
    """Publish every id, retrying each with the same ``Nats-Msg-Id`` until acknowledged."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for msg_id in ids:
        queue.put_nowait(msg_id)
    deadline = time.monotonic() + PUBLISH_DEADLINE_S

    async def worker() -> None:
        while not queue.empty():
            msg_id = queue.get_nowait()
            n = int(msg_id.rsplit("-", 1)[1])
            body = (
                b'{"specversion":"1.0","id":"%s","source":"deploy-test",'
                b'"type":"org.impactbus.metric","data":{"value":%d}}' % (msg_id.encode(), n)
            )
            backoff = RETRY_FIRST_S
            while True:
                log.attempts += 1
                started = time.monotonic()
                try:
                    ack = await js.publish(
                        f"impact.loadtest.metric.m{n % 10}",
                        body,
                        timeout=ATTEMPT_TIMEOUT_S,
                        headers={"Nats-Msg-Id": msg_id},
                    )
                except (TimeoutError, nats.errors.Error) as exc:
                    log.errors[type(exc).__name__] += 1
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{msg_id} never acknowledged") from None
                    # same msg id again after a short, growing pause: a storm of retries
                    # would only load the servers that are electing a new leader
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX_S)
                    continue
                log.acked[msg_id] = ack.seq
                log.duplicates_acked += bool(ack.duplicate)
                log.times.append((started, time.monotonic()))
                break

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


async def _stored_ids(js: JetStreamContext, expected: int) -> Counter[str]:
    """Every ``Nats-Msg-Id`` in EVENTS, counted, read with an ephemeral pull consumer."""
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.ALL,
        filter_subject="impact.loadtest.>",
        inactive_threshold=30.0,
    )
    sub = await _retry(
        "create a consumer",
        lambda: js.pull_subscribe("impact.loadtest.>", stream=EVENTS, config=config),
    )
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + 30
    quiet_fetches = 0
    try:
        # Read until `expected` arrived, then on until a fetch finds nothing: whatever
        # comes beyond `expected` is a duplicate.
        while quiet_fetches == 0 or sum(seen.values()) < expected:
            assert time.monotonic() < deadline, f"read {sum(seen.values())} of {expected}"
            try:
                msgs = await sub.fetch(500, timeout=1)
            except TimeoutError:  # nats-py raises its own subclass or the builtin one
                quiet_fetches += 1
                continue
            except nats.errors.Error:  # e.g. 503 while the consumer elects its leader
                await asyncio.sleep(0.2)
                continue
            for msg in msgs:
                seen[(msg.headers or {}).get("Nats-Msg-Id", "<none>")] += 1
    finally:
        await sub.unsubscribe()
    return seen


async def _wait_leader_other_than(js: JetStreamContext, old: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = await js.stream_info(EVENTS)
            if info.cluster and info.cluster.leader and info.cluster.leader != old:
                return info.cluster.leader
        except (TimeoutError, nats.errors.Error):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"no new leader for {EVENTS} in {timeout}s")


async def test_killing_the_stream_leader_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    bus = await _hub(cluster)
    try:
        await _retry("declare the topology", bus.ensure_topology)
        info = await bus.js.stream_info(EVENTS)
        assert info.config.num_replicas == 3
        leader_name = await _wait_replicas(bus.js, EVENTS)

        ids = [f"deploy-test-{n}" for n in range(EVENTS_TOTAL)]
        log = PublishLog()
        publishing = asyncio.create_task(_publish_all(bus.js, ids, log))
        while len(log.acked) < KILL_AFTER and not publishing.done():
            await asyncio.sleep(0.01)
        assert not publishing.done(), "published everything before the kill"

        victim = cluster.node(leader_name)
        acked_before_kill = len(log.acked)
        killed_at = time.monotonic()
        victim.kill()  # SIGKILL by PID: no lame duck, no flush
        await publishing

        # Publishing resumed: the first ack of an attempt that *started* after the kill
        # (acks of attempts already in flight do not show that a new leader took over).
        resumed = min(acked for started, acked in log.times if started > killed_at)
        stall = resumed - killed_at
        print(  # shown with -s / on failure: what the kill cost
            f"killed {leader_name} after {acked_before_kill} acks; resumed in {stall:.2f}s; "
            f"{log.attempts} attempts, {log.duplicates_acked} duplicate acks, "
            f"errors {dict(log.errors)}"
        )
        assert stall < RESUME_BOUND_S, f"publishing stalled {stall:.1f}s after the kill"
        assert acked_before_kill < EVENTS_TOTAL

        new_leader = await _wait_leader_other_than(bus.js, leader_name)
        assert new_leader != leader_name

        stored = await _stored_ids(bus.js, EVENTS_TOTAL)
        lost = set(log.acked) - set(stored)
        duplicated = {k: v for k, v in stored.items() if v > 1}
        assert not lost, f"{len(lost)} acknowledged events lost"
        assert not duplicated, f"{len(duplicated)} events stored more than once"
        assert set(stored) == set(ids)
        state = (await bus.js.stream_info(EVENTS)).state
        assert state.messages == EVENTS_TOTAL
        # every message got one sequence number: retries that reached the stream were deduped
        assert len(set(log.acked.values())) == EVENTS_TOTAL

        # The killed node restarts from its store and catches up.
        victim.start()
        victim.wait_ready()
        await _wait_replicas(bus.js, EVENTS, timeout=30)
    finally:
        await bus.close()


async def _connect(cluster: Cluster, user: str, errors: list[str]) -> Client:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        cluster.urls,
        user=user,
        password=cluster.pw[user],
        name=f"deploy-test-{user}",
        error_cb=on_error,
        connect_timeout=2,
        max_reconnect_attempts=0,
    )


async def _wait_for(errors: list[str], needle: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(needle.lower() in e.lower() for e in errors):  # nats-py lowercases it
        assert time.monotonic() < deadline, f"no error containing {needle!r}: {errors}"
        await asyncio.sleep(0.02)


async def test_a_data_system_may_publish_only_its_own_metrics(cluster: Cluster) -> None:
    bus = await _hub(cluster)
    errors: list[str] = []
    nc = await _connect(cluster, "system-somerville", errors)
    try:
        await _retry("declare the topology", bus.ensure_topology)
        js = nc.jetstream()
        ack = await _retry(
            "publish a metric",
            lambda: js.publish(
                "impact.somerville.metric.bmi",
                b'{"value": 27.1}',
                timeout=ATTEMPT_TIMEOUT_S,
                headers={"Nats-Msg-Id": "somerville-bmi-1"},
            ),
        )
        assert ack.stream == EVENTS

        for subject in ("impact.otherinit.metric.x", "impact.somerville.milestone.x"):
            with pytest.raises(nats.errors.TimeoutError):  # refused: no ack ever comes
                await js.publish(subject, b"{}", timeout=1.0)
            await _wait_for(errors, f'permissions violation for publish to "{subject}"')
            with pytest.raises(nats.js.errors.NotFoundError):
                await bus.js.get_last_msg(EVENTS, subject)

        stored = await bus.js.get_last_msg(EVENTS, "impact.somerville.metric.bmi")
        assert stored.data == b'{"value": 27.1}'
    finally:
        await nc.close()
        await bus.close()
