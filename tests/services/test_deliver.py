"""Delivery workers on real parts: a nats-server, aiosmtpd, the Slack fake, a webhook sink.

Each test queues jobs the way the router does (``deliver.<channel>.<initiative>`` with the
job id as ``Nats-Msg-Id``), runs the real :class:`DeliveryWorker` over the durable
consumer with :func:`run_each`, and counts what arrived, what was retried and what died.
Retries use a 50-200 ms backoff; nothing sleeps a fixed time: every wait is on a
condition with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from notifiers.base import Notifier
from notifiers.email import EmailNotifier
from notifiers.settings import SecretStoreSettings, SlackSettings, SmtpSettings, WebhookSettings
from notifiers.slack import SlackNotifier
from notifiers.webhook import WebhookNotifier
from notifiers.webhook_signing import verify
from schemas.delivery import Delivery
from schemas.directory import Recipient
from schemas.events import new_event
from schemas.subjects import delivery_subject
from schemas.targets import EmailTarget, SlackTarget, WebhookTarget
from services.bus import DELIVERIES, KV_SENT, Bus
from services.bus.consumer import run_each
from services.bus.failures import RetryPolicy
from services.bus.webhook_secrets import KvSecretStore
from services.directory.records import Directory
from services.pipeline.deadletters import DeadLetter, list_dead
from services.pipeline.deliver import DeliveryWorker
from services.pipeline.deliverylog import event_log
from tests.fakes.slack import SlackFake
from tests.fakes.smtp import SmtpSink
from tests.fakes.webhook import WebhookSink

FAST = RetryPolicy(base_s=0.05, cap_s=0.2, attempts=4)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10) -> None:
    """Wait for ``check`` to hold, polling; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Rig:
    """Workers over one test's nats-server, and what they left behind."""

    bus: Bus
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    notifiers: list[Notifier] = field(default_factory=list)

    async def worker(self, notifier: Notifier, retry: RetryPolicy = FAST) -> DeliveryWorker:
        worker = await DeliveryWorker.open(self.bus, notifier, retry)
        self.notifiers.append(notifier)
        self.tasks.append(
            asyncio.create_task(
                run_each(
                    self.bus,
                    DELIVERIES,
                    notifier.channel,
                    worker.handle,
                    stop=self.stop,
                    max_in_flight=16,
                    grace=2,
                )
            )
        )
        return worker

    async def queue(self, *deliveries: Delivery) -> None:
        for d in deliveries:
            await self.bus.js.publish(
                delivery_subject(d.target.channel, d.event.initiative),
                d.model_dump_json(exclude_none=True).encode(),
                headers={"Nats-Msg-Id": d.job_id},
            )

    async def dead(self) -> list[DeadLetter]:
        return (await list_dead(self.bus))[0]

    async def quiet(self, *channels: str) -> None:
        async def idle() -> bool:
            for channel in channels:
                info = await self.bus.js.consumer_info(DELIVERIES, channel)
                if info.num_pending or info.num_ack_pending:
                    return False
            return True

        await until(idle, f"{channels} consumers to be idle")

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for n in self.notifiers:
            await n.aclose()


@pytest.fixture
async def rig(bus: Bus) -> AsyncIterator[Rig]:
    r = Rig(bus)
    yield r
    await r.close()


def email_notifier(sink: SmtpSink) -> EmailNotifier:
    return EmailNotifier(
        SmtpSettings(host=sink.host, port=sink.port, tls="none", pool_size=2, timeout=5)
    )


def slack_notifier(fake: SlackFake) -> SlackNotifier:
    # No SDK-level 429 retries: the worker's own retry (nak with Retry-After) is tested;
    # no client-side pacing either (the fake has no rate limit unless a test sets one).
    return SlackNotifier(
        SlackSettings(
            token="xoxb-test",
            api_url=fake.api_url,
            rate_limit_retries=0,
            timeout=5,
            per_channel_per_s=0,
        )
    )


def webhook_notifier(bus: Bus, timeout: float = 5) -> WebhookNotifier:
    settings = WebhookSettings(allow_loopback=True, timeout=timeout)
    return WebhookNotifier(
        settings, secrets=KvSecretStore(bus, SecretStoreSettings(), settings.secrets)
    )


def job(
    target: EmailTarget | SlackTarget | WebhookTarget,
    *,
    n: int = 1,
    topic: str = "market",
    recipient: str = "ann",
) -> Delivery:
    event = new_event(
        "update",
        "somerville",
        topic,
        {"title": f"Update {n}", "body": "Body"},
        source="urn:test",
        event_id=f"ev-{topic}-{n}",
    )
    return Delivery(event=event, recipient=recipient, target=target)


ANN = EmailTarget(address="ann@example.org", name="Ann")


# ------------------------------------------------------------------------------ email


async def test_smtp_421_then_450_then_recovery_is_delivered_once(
    rig: Rig, smtp_sink: SmtpSink
) -> None:
    smtp_sink.fail_next(421)
    smtp_sink.fail_next(450)
    worker = await rig.worker(email_notifier(smtp_sink))
    await rig.queue(job(ANN))
    await smtp_sink.wait_for_async(1)
    await rig.quiet("email")
    assert len(smtp_sink.messages) == 1
    assert worker.counts["retrying"] == 2
    assert worker.counts["sent"] == 1
    assert await rig.dead() == []


async def test_smtp_550_is_dead_after_one_attempt(rig: Rig, smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next(550)
    worker = await rig.worker(email_notifier(smtp_sink))
    delivery = job(ANN)
    await rig.queue(delivery)
    await until(lambda: _has(rig.dead, 1), "a dead letter")
    await rig.quiet("email")
    [dead] = await rig.dead()
    assert (dead.reason, dead.attempts, dead.channel) == ("rejected", 1, "email")
    assert dead.job_id == delivery.job_id
    assert "550" in dead.error
    assert smtp_sink.messages == []
    assert worker.counts["retrying"] == 0


async def test_redelivered_job_with_a_sent_marker_is_acked_without_sending(
    rig: Rig, smtp_sink: SmtpSink
) -> None:
    delivery = job(ANN)
    sent = await rig.bus.kv(KV_SENT)
    await sent.put(delivery.job_id, b"<earlier@impactbus>")
    await rig.queue(delivery)
    # The first delivery goes to a worker that "crashes": it never settles the job.
    sub = await rig.bus.js.pull_subscribe_bind(durable="email", stream=DELIVERIES)
    [first] = await sub.fetch(1, timeout=5)
    await first.nak()
    await sub.unsubscribe()
    worker = await rig.worker(email_notifier(smtp_sink))
    await rig.quiet("email")
    assert worker.counts["duplicate"] == 1
    assert worker.counts["sent"] == 0
    assert smtp_sink.messages == []


async def test_a_follow_up_email_replies_to_the_topics_first_message(
    rig: Rig, smtp_sink: SmtpSink
) -> None:
    await rig.worker(email_notifier(smtp_sink))
    await rig.queue(job(ANN, n=1))
    [first] = await smtp_sink.wait_for_async(1)
    await rig.quiet("email")
    await rig.queue(job(ANN, n=2), job(ANN, n=3, topic="other"))
    messages = await smtp_sink.wait_for_async(3)
    second = next(m for m in messages if "Update 2" in str(m["Subject"]))
    other = next(m for m in messages if "Update 3" in str(m["Subject"]))
    assert first["In-Reply-To"] is None
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"] == first["Message-ID"]
    assert other["In-Reply-To"] is None  # another topic: another thread


# ------------------------------------------------------------------------------ slack

C1 = SlackTarget(conversation="C0123ABC")


async def test_slack_429_with_retry_after_waits_then_delivers(
    rig: Rig, slack_fake: SlackFake
) -> None:
    slack_fake.respond_next(429, headers={"Retry-After": "1"})
    worker = await rig.worker(slack_notifier(slack_fake))
    delivery = job(C1)
    started = time.monotonic()
    await rig.queue(delivery)
    await slack_fake.wait_for_async(1)
    waited = time.monotonic() - started
    await rig.quiet("slack")
    assert waited >= 1.0, "Retry-After must be honoured"
    assert (worker.counts["retrying"], worker.counts["sent"]) == (1, 1)
    assert len(slack_fake.messages) == 1
    log = await event_log(rig.bus, delivery.event.id)
    [target] = log.targets
    assert target.status == "sent"
    assert target.attempts == 2


async def test_slack_500_then_ok_is_delivered(rig: Rig, slack_fake: SlackFake) -> None:
    slack_fake.respond_next(500)
    worker = await rig.worker(slack_notifier(slack_fake))
    await rig.queue(job(C1))
    await slack_fake.wait_for_async(1)
    await rig.quiet("slack")
    assert (worker.counts["retrying"], worker.counts["sent"], worker.counts["dead"]) == (1, 1, 0)
    assert len(slack_fake.messages) == 1


async def test_channel_not_found_disables_the_target_and_tells_the_owner_once(
    rig: Rig, bus: Bus, slack_fake: SlackFake, smtp_sink: SmtpSink
) -> None:
    directory = await Directory.open(bus)
    await directory.put_recipient(Recipient(id="ops", name="Ops", email="ops@example.org"))
    await directory.put_recipient(
        Recipient(id="steering", slack_channel="C0123ABC", owner="ops", name="Steering")
    )
    slack_fake.respond_next(200, json={"ok": False, "error": "channel_not_found"}, times=5)
    slack = await rig.worker(slack_notifier(slack_fake))
    email = await rig.worker(email_notifier(smtp_sink))
    await rig.queue(*(job(C1, n=i, recipient="steering") for i in range(5)))
    await until(lambda: _has(rig.dead, 5), "five dead letters")
    [notice] = await smtp_sink.wait_for_async(1)
    await rig.quiet("slack", "email")
    assert len(smtp_sink.messages) == 1
    assert (slack.counts["dead"], slack.counts["disabled"], slack.counts["notices"]) == (5, 1, 1)
    assert email.counts["sent"] == 1
    assert notice["To"].addresses[0].addr_spec == "ops@example.org"
    assert "Stopped sending slack messages to Steering" in str(notice["Subject"])
    text = notice.get_body(("plain",))
    assert text is not None
    assert "impactbus recipients enable steering slack" in text.get_content()
    stored = await directory.get_recipient("steering")
    assert stored.disabled_channels == ("slack",)
    assert {d.reason for d in await rig.dead()} == {"rejected"}
    assert slack_fake.messages == []


# ---------------------------------------------------------------------------- webhook


def hook(sink: WebhookSink) -> WebhookTarget:
    return WebhookTarget(url=sink.url_for("/hook"))


async def test_webhook_500_and_timeout_are_retried_then_delivered_signed(
    rig: Rig, bus: Bus, webhook_sink: WebhookSink
) -> None:
    webhook_sink.respond_next(500)
    webhook_sink.respond_next(200, delay=1.0)  # longer than the notifier's timeout
    worker = await rig.worker(webhook_notifier(bus, timeout=0.3))
    delivery = job(hook(webhook_sink))
    await rig.queue(delivery)
    await until(lambda: _true(worker.counts["sent"] == 1), "the webhook to be sent")
    await rig.quiet("webhook")
    requests = webhook_sink.requests
    assert len(requests) == 3
    assert {r.headers["webhook-id"] for r in requests} == {delivery.job_id}
    assert worker.counts["retrying"] == 2
    assert await rig.dead() == []
    secrets = await KvSecretStore(bus, SecretStoreSettings()).get(hook(webhook_sink).key)
    verify(secrets, requests[-1].headers, requests[-1].body)


async def test_webhook_redirect_is_dead_and_never_followed(
    rig: Rig, bus: Bus, webhook_sink_factory: Callable[[], WebhookSink]
) -> None:
    first, elsewhere = webhook_sink_factory(), webhook_sink_factory()
    first.respond_next(301, headers={"Location": elsewhere.url_for("/hook")})
    await rig.worker(webhook_notifier(bus))
    await rig.queue(job(hook(first)))
    await until(lambda: _has(rig.dead, 1), "a dead letter")
    [dead] = await rig.dead()
    assert (dead.reason, dead.attempts) == ("redirect", 1)
    assert elsewhere.connections == 0


async def test_webhook_410_is_dead_and_disables_the_target(
    rig: Rig, bus: Bus, webhook_sink: WebhookSink
) -> None:
    directory = await Directory.open(bus)
    crm = Recipient(id="crm", webhook_url=webhook_sink.url_for("/hook"))
    await directory.put_recipient(crm)
    webhook_sink.respond_next(410)
    worker = await rig.worker(webhook_notifier(bus))
    await rig.queue(job(crm.target("webhook"), recipient="crm"))
    await until(lambda: _has(rig.dead, 1), "a dead letter")
    [dead] = await rig.dead()
    assert (dead.reason, dead.attempts) == ("gone", 1)
    assert (await directory.get_recipient("crm")).disabled_channels == ("webhook",)
    assert worker.counts["notices"] == 0  # no owner and no email: nobody to tell


async def test_exhausted_attempts_are_dead_with_reason_and_count(
    rig: Rig, bus: Bus, webhook_sink: WebhookSink
) -> None:
    webhook_sink.respond_next(503, times=10)
    worker = await rig.worker(webhook_notifier(bus))
    delivery = job(hook(webhook_sink))
    await rig.queue(delivery)
    await until(lambda: _has(rig.dead, 1), "a dead letter")
    await rig.quiet("webhook")
    [dead] = await rig.dead()
    assert (dead.reason, dead.attempts) == ("exhausted", FAST.attempts)
    assert "HTTP 503" in dead.error
    assert len(webhook_sink.requests) == FAST.attempts
    assert worker.counts["retrying"] == FAST.attempts - 1
    log = await event_log(bus, delivery.event.id)
    assert [t.status for t in log.targets] == ["dead"]


# ------------------------------------------------------------------------------ slack


async def test_a_follow_up_slack_post_replies_in_the_topics_thread(
    rig: Rig, slack_fake: SlackFake
) -> None:
    await rig.worker(slack_notifier(slack_fake))
    await rig.queue(job(C1, n=1))
    [first] = await slack_fake.wait_for_async(1)
    await rig.quiet("slack")
    await rig.queue(job(C1, n=2))
    second = (await slack_fake.wait_for_async(2))[1]
    assert first.thread_ts is None
    assert second.thread_ts == first.ts


async def _has(read: Callable[[], Awaitable[list[DeadLetter]]], n: int) -> bool:
    return len(await read()) >= n


async def _true(value: bool) -> bool:
    return value
