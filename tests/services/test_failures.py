"""No message loops: the consumer loops and the router settle every failure, on a real server.

A failing handler's message is retried with a delay while the failure is transient, for at
most the policy's attempts, and dead-lettered otherwise; the next message is handled. The
retry policy records the delays it hands out (the seam), and attempts are read from what
JetStream reports as ``num_delivered``: nothing is timed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import ClassVar

import pytest
from nats.aio.msg import Msg
from nats.js import api

from notifiers.email import EmailNotifier
from notifiers.settings import SmtpSettings
from schemas.delivery import Delivery
from schemas.events import Event, new_event
from schemas.subjects import delivery_subject, tick_subject
from schemas.targets import EmailTarget
from services.bus import DEAD, DELIVERIES, DIGEST_CONSUMER, EVENTS, ROUTER_CONSUMER, SCHEDULES, Bus
from services.bus.consumer import ConsumerStats, run_batches, run_each
from services.bus.failures import Failures, RetryPolicy, encode_dead_letter
from services.digest.service import DigestService
from services.digest.view import DigestView, render_digest_email
from services.directory.records import Directory
from services.pipeline.deadletters import DeadLetter, get_dead, list_dead
from services.pipeline.deliver import DeliveryWorker
from services.pipeline.ingest import publish_events
from services.pipeline.router import Router
from tests.fakes.smtp import SmtpSink


class Recorded(RetryPolicy):
    """The policy under test, remembering every delay it hands out (per attempt)."""

    delays: ClassVar[list[tuple[int, float]]] = []

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        wait = super().delay(attempt, retry_after)
        Recorded.delays.append((attempt, wait))
        return wait


FAST = Recorded(base_s=0.02, cap_s=0.1, attempts=3)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10) -> None:
    """Wait for ``check`` to hold, polling; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def dead(bus: Bus) -> list[DeadLetter]:
    return (await list_dead(bus))[0]


async def count(bus: Bus, stream: str) -> int:
    return (await bus.js.stream_info(stream)).state.messages


@pytest.fixture
async def work(bus: Bus) -> Bus:
    """A ``WORK`` stream on ``work.<kind>.<initiative>`` with a durable pull consumer."""
    await bus.js.add_stream(api.StreamConfig(name="WORK", subjects=["work.>"]))
    await bus.js.add_consumer(
        "WORK", api.ConsumerConfig(durable_name="w", ack_policy=api.AckPolicy.EXPLICIT)
    )
    Recorded.delays.clear()
    return bus


class Handler:
    """Fails on messages whose body names an exception, records every delivery."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, int]] = []

    async def __call__(self, msg: Msg) -> None:
        self.seen.append((msg.data, msg.metadata.num_delivered))
        if msg.data == b"timeout":
            raise TimeoutError("nats: timeout")
        if msg.data == b"bug":
            raise KeyError("missing")
        await msg.ack()

    def deliveries(self, body: bytes) -> list[int]:
        return [n for data, n in self.seen if data == body]


async def test_a_transient_failure_is_retried_with_backoff_then_dead_after_its_attempts(
    work: Bus,
) -> None:
    handler, stop, stats = Handler(), asyncio.Event(), ConsumerStats("w")
    failures = Failures(work.nc, "w", FAST)
    task = asyncio.create_task(
        run_each(work, "WORK", "w", handler, stop=stop, stats=stats, failures=failures)
    )
    try:
        await work.js.publish("work.job.somerville", b"timeout")
        await until(lambda: _n(dead(work), 1), "a dead letter")
        await work.js.publish("work.job.somerville", b"fine")
        await until(lambda: _true(handler.deliveries(b"fine") == [1]), "the next message")
    finally:
        stop.set()
        await task
    assert handler.deliveries(b"timeout") == [1, 2, 3]  # FAST.attempts, then no more
    assert [a for a, _ in Recorded.delays] == [1, 2]  # a nak(delay) per retry, never plain
    assert all(0.01 <= d <= 0.1 for _, d in Recorded.delays)
    [letter] = await dead(work)
    assert (letter.reason, letter.initiative, letter.attempts) == ("failed", "somerville", 3)
    assert letter.error == "TimeoutError: nats: timeout"
    assert (letter.payload, letter.consumer, letter.original_subject) == (
        "timeout",
        "w",
        "work.job.somerville",
    )
    assert stats.failures == {"retrying": 2, "dead": 1, "dead_failed": 0}


async def test_a_permanent_failure_is_dead_at_once_and_a_failed_batch_is_settled_per_message(
    work: Bus,
) -> None:
    handler, stop = Handler(), asyncio.Event()
    seen: list[bytes] = []

    async def batch(msgs: list[Msg]) -> None:
        for msg in msgs:
            seen.append(msg.data)
            if msg.data == b"ok":
                await msg.ack()
        raise KeyError("the batch handler broke")

    each = asyncio.create_task(
        run_each(work, "WORK", "w", handler, stop=stop, failures=Failures(work.nc, "w", FAST))
    )
    try:
        await work.js.publish("work.job.a", b"bug")
        await until(lambda: _n(dead(work), 1), "a dead letter")
        await work.js.publish("work.job.a", b"fine")
        await until(lambda: _true(handler.deliveries(b"fine") == [1]), "the next message")
    finally:
        stop.set()
        await each
    assert handler.deliveries(b"bug") == [1]  # not retried: it would fail the same way

    await work.js.add_consumer(
        "WORK", api.ConsumerConfig(durable_name="b", ack_policy=api.AckPolicy.EXPLICIT)
    )
    stop = asyncio.Event()
    batches = asyncio.create_task(
        run_batches(work, "WORK", "b", batch, stop=stop, failures=Failures(work.nc, "b", FAST))
    )
    try:
        await work.js.publish("work.job.b", b"ok")
        await work.js.publish("work.job.b", b"poison")
        await until(lambda: _n(dead(work), 4), "the batch's unsettled messages dead-lettered")
    finally:
        stop.set()
        await batches
    # Consumer "b" saw the 2 earlier messages and its own 2, each once: nothing looped.
    assert sorted(seen) == [b"bug", b"fine", b"ok", b"poison"]
    letters = await dead(work)
    assert len(letters) == 4
    assert {d.payload for d in letters[1:]} == {"bug", "fine", "poison"}  # "ok" was acked


def test_a_dead_letter_too_large_is_cut_with_its_size_and_hash() -> None:
    original = b"\xff" * 300 * 1024
    body = {"reason": "invalid", "error": "not JSON"}
    encoded = encode_dead_letter(body, original, 64 * 1024)
    assert len(encoded) <= 64 * 1024
    letter = json.loads(encoded)
    assert letter["payload_truncated"] is True
    assert letter["payload_bytes"] == len(original)
    assert letter["payload_sha256"] == hashlib.sha256(original).hexdigest()
    assert letter["payload"]
    assert set(letter["payload"]) == {"\ufffd"}
    small = json.loads(encode_dead_letter(body, b'{"a": 1}', 64 * 1024))
    assert small["payload"] == '{"a": 1}'
    assert "payload_truncated" not in small


# ------------------------------------------------------------------------------ router


class FaultyRouter(Router):
    """Routing raises for chosen event ids (the seam: :meth:`Router.plan` is public)."""

    faults: ClassVar[dict[str, type[Exception]]] = {}

    def plan(self, event: Event, raw: bytes, now: datetime) -> list[tuple[str, bytes, str]]:
        fault = self.faults.get(event.id)
        if fault is not None:
            raise fault(f"cannot route {event.id}")
        return super().plan(event, raw, now)


def _update(event_id: str) -> Event:
    return new_event("update", "x", "market", {"title": event_id, "body": "b"}, event_id=event_id)


async def _router(bus: Bus, stop: asyncio.Event) -> tuple[FaultyRouter, asyncio.Task[None]]:
    d = await Directory.open(bus)
    await d.add_recipient(id="ann", email="ann@example.org", name="Ann")
    await d.subscribe("ann", "impact.x.>", "email")
    failures = Failures(bus.nc, "router", FAST)
    router = await FaultyRouter.open(bus, failures=failures)
    await router.start()
    task = asyncio.create_task(
        run_batches(bus, EVENTS, ROUTER_CONSUMER, router.handle, stop=stop, failures=failures)
    )
    return router, task


async def test_router_dead_letters_a_300kb_poison_event_cut_and_keeps_routing(bus: Bus) -> None:
    stop = asyncio.Event()
    router, task = await _router(bus, stop)
    poison = b"\xff" * 300 * 1024
    try:
        await bus.js.publish("impact.x.metric.c11", poison)
        await until(lambda: _n(dead(bus), 1), "the poison's dead letter")
        await publish_events(bus, [_update("after")])
        await until(lambda: _eq(count(bus, DELIVERIES), 1), "the next event's job")
    finally:
        stop.set()
        await task
        await router.stop()
    [letter] = await dead(bus)
    assert (letter.reason, letter.initiative) == ("invalid", "x")
    assert letter.payload_truncated
    assert letter.payload_bytes == len(poison)
    assert letter.payload_sha256 == hashlib.sha256(poison).hexdigest()
    full = await bus.js.get_msg(DEAD, letter.seq)
    assert len(full.data or b"") <= bus.nc.max_payload
    assert (await get_dead(bus, letter.seq)).note.startswith(" (payload truncated: 307,200 bytes")
    info = await bus.js.consumer_info(EVENTS, ROUTER_CONSUMER)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_one_event_that_breaks_routing_does_not_fail_its_batch(bus: Bus) -> None:
    FaultyRouter.faults = {"broken": ValueError, "flaky": TimeoutError}
    stop = asyncio.Event()
    router, task = await _router(bus, stop)
    try:
        # One batch: the broken and the flaky event between good ones.
        await publish_events(bus, [_update("a"), _update("broken"), _update("flaky"), _update("b")])
        await until(lambda: _n(dead(bus), 2), "two dead letters")
        await until(lambda: _eq(count(bus, DELIVERIES), 2), "the good events' jobs")
        info = await bus.js.consumer_info(EVENTS, ROUTER_CONSUMER)
        assert (info.num_pending, info.num_ack_pending) == (0, 0)
    finally:
        stop.set()
        await task
        await router.stop()
        FaultyRouter.faults = {}
    letters = {d.error: d for d in await dead(bus)}
    broken = letters["ValueError: cannot route broken"]
    flaky = letters["TimeoutError: cannot route flaky"]
    assert (broken.reason, broken.attempts) == ("failed", 1)  # permanent: at once
    assert (flaky.reason, flaky.attempts) == ("failed", FAST.attempts)  # transient: retried
    assert router.counts["routed"] == 2
    assert router.failures.counts == {"retrying": FAST.attempts - 1, "dead": 2, "dead_failed": 0}


async def _n(letters: Awaitable[list[DeadLetter]], n: int) -> bool:
    return len(await letters) >= n


async def _eq(value: Awaitable[int], n: int) -> bool:
    return await value == n


async def _true(value: bool) -> bool:
    return value


# ------------------------------------------------------------------------------ worker


async def test_worker_dead_letters_a_300kb_unusable_job_cut_and_keeps_delivering(
    bus: Bus, smtp_sink: SmtpSink
) -> None:
    notifier = EmailNotifier(SmtpSettings(host=smtp_sink.host, port=smtp_sink.port, tls="none"))
    worker = await DeliveryWorker.open(bus, notifier, FAST)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_each(bus, DELIVERIES, "email", worker.handle, stop=stop, failures=worker.failures())
    )
    poison = b"\xff" * 300 * 1024
    try:
        await bus.js.publish("deliver.email.x", poison)
        await until(lambda: _n(dead(bus), 1), "the unusable job's dead letter")
        event = _update("after")
        good = Delivery(event=event, recipient="ann", target=EmailTarget(address="ann@example.org"))
        await bus.js.publish(
            delivery_subject("email", "x"),
            good.model_dump_json().encode(),
            headers={"Nats-Msg-Id": good.job_id},
        )
        await smtp_sink.wait_for_async(1)
    finally:
        stop.set()
        await task
        await notifier.aclose()
        await worker.close()
    [letter] = await dead(bus)
    assert (letter.reason, letter.initiative, letter.channel) == ("invalid", "x", "email")
    assert letter.payload_truncated
    assert letter.payload_bytes == len(poison)
    assert letter.payload_sha256 == hashlib.sha256(poison).hexdigest()
    assert worker.counts["dead"] == 1
    assert worker.counts["sent"] == 1
    info = await bus.js.consumer_info(DELIVERIES, "email")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


# ------------------------------------------------------------------------------ digest


class FailingRender:
    """Renders digest emails, failing the first ``times`` renders for some recipients."""

    def __init__(self, fault: type[Exception], times: int, *recipients: str) -> None:
        self.fault, self.left = fault, dict.fromkeys(recipients, times)

    def __call__(self, view: DigestView, preferences: str | None) -> tuple[str, str, str]:
        who = view.recipient_id
        if self.left.get(who, 0) > 0:
            self.left[who] -= 1
            raise self.fault(f"cannot render {who}'s digest")
        return render_digest_email(view, preferences)


async def _digests(
    bus: Bus, render: FailingRender
) -> tuple[DigestService, asyncio.Task[None], asyncio.Event]:
    Recorded.delays.clear()
    d = await Directory.open(bus)
    for rid in ("ana", "bob"):
        await d.add_recipient(
            id=rid, email=f"{rid}@example.org", name=rid.title(), digest="daily@08:00"
        )
        await d.subscribe(rid, "impact.x.>", "email", mode="digest")
    router = await Router.open(bus)
    await router.start()
    await publish_events(bus, [_update("one")])
    sub = await bus.js.pull_subscribe_bind(durable=ROUTER_CONSUMER, stream=EVENTS)
    await router.handle(await sub.fetch(10, timeout=5))
    await sub.unsubscribe()
    await router.stop()
    service = await DigestService.open(bus, render_email=render)
    await service.start()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_each(
            bus,
            SCHEDULES,
            DIGEST_CONSUMER,
            service.handle_tick,
            stop=stop,
            failures=service.failures(FAST),
        )
    )
    return service, task, stop


async def _tick(bus: Bus, recipient: str) -> None:
    await bus.js.publish(tick_subject(recipient), b"", stream=SCHEDULES)


async def test_a_digest_that_cannot_be_made_is_dead_and_the_others_and_the_next_tick_run(
    bus: Bus,
) -> None:
    render = FailingRender(ValueError, 1, "bob")
    service, task, stop = await _digests(bus, render)
    try:
        await _tick(bus, "bob")
        await _tick(bus, "ana")
        await until(lambda: _n(dead(bus), 1), "bob's tick dead-lettered")
        await until(lambda: _eq(count(bus, DELIVERIES), 1), "ana's digest")
        await _tick(bus, "bob")  # the schedule's next tick
        await until(lambda: _eq(count(bus, DELIVERIES), 2), "bob's digest on the next tick")
    finally:
        stop.set()
        await task
        await service.stop()
    [letter] = await dead(bus)
    assert (letter.reason, letter.initiative, letter.recipient) == ("digest", "digest", "bob")
    assert letter.error == "ValueError: cannot render bob's digest"
    assert letter.attempts == 1
    assert letter.original_subject == "digest-tick.bob"
    assert service.counts["sent"] == 2


async def test_a_digest_failing_transiently_is_retried_and_dead_after_its_attempts(
    bus: Bus,
) -> None:
    render = FailingRender(TimeoutError, FAST.attempts - 1, "ana")  # recovers on the last
    render.left["bob"] = 99  # never recovers
    service, task, stop = await _digests(bus, render)
    try:
        await _tick(bus, "ana")
        await _tick(bus, "bob")
        await until(lambda: _n(dead(bus), 1), "bob's tick dead-lettered")
        await until(lambda: _eq(count(bus, DELIVERIES), 1), "ana's digest")
    finally:
        stop.set()
        await task
        await service.stop()
    [letter] = await dead(bus)
    assert (letter.recipient, letter.attempts) == ("bob", FAST.attempts)
    assert render.left == {"ana": 0, "bob": 99 - FAST.attempts}
    assert sorted(a for a, _ in Recorded.delays) == [1, 1, 2, 2]  # both retried, with delays
