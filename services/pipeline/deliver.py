"""Delivery workers: consume one channel's jobs, call its notifier, settle each job.

* sent -> ``sent`` marker in KV (TTL), ack, log ``sent``;
* :class:`~notifiers.base.TransientDeliveryError` -> ``nak(delay)`` with exponential
  backoff and jitter, ``Retry-After`` as a floor (never a plain ``nak()``, which ignores
  backoff), until the channel's attempts are used up -> dead letter (its reason, e.g.
  ``exhausted``, and the number of attempts);
* :class:`~notifiers.base.PermanentDeliveryError` -> dead letter at once, and the target
  disabled when the error says so;
* anything unexpected counts as transient: a bug must not lose a message.

A job whose handling raises outside the send (the bus failing under the worker, a bug) is
settled by the consumer loop with the same retry policy (:meth:`DeliveryWorker.failures`):
retried if transient, else dead-lettered with the job, never handed back at once.

While a job is being sent (which includes waiting for a pooled SMTP connection or HTTP
slot) the worker tells JetStream it is still in progress every third of the consumer's
``ack_wait``: a slow relay must not make the server hand the same job to a second worker,
which would send it twice.

Idempotency: the ``sent`` marker is written (and acknowledged by JetStream) before the
job is acked, and every job is checked against it before sending. So a crash duplicates
only a message whose send had completed and whose marker was not yet stored; the worker
admits no more such sends than the notifier's ``concurrency`` (the SMTP pool: one, with
``IMPACTBUS_SMTP_POOL_SIZE=1``). First deliveries are checked too: the router's
deterministic ``Nats-Msg-Id`` does not make a re-published job a duplicate once the job
was consumed and the server restarted (a work-queue stream forgets the ids of deleted
messages when it recovers) or the duplicate window passed. If the marker cannot be read,
the job is retried later rather than sent on a guess. A dead letter that is replayed
keeps its job id (and so its marker) but arrives as a new message.

Threads (:mod:`services.pipeline.threads`): before sending, the job gets ``reply_to`` = the first
message of its (initiative, kind, topic) thread at that target; after the first message
of a thread is sent it is recorded with a compare-and-set.

Disabling: a permanent error with ``disable_target`` (Slack ``channel_not_found``, webhook
410 or a forbidden address) adds the channel to the recipient's ``disabled_channels`` with
a compare-and-set, so the router stops queueing for it. Only the worker whose update wins
queues one email to the recipient's ``owner`` (or the recipient's own address): one notice
per disabling, however many jobs fail at once. ``impactbus recipients enable`` undoes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from notifiers.base import Notifier, PermanentDeliveryError, TransientDeliveryError
from schemas.delivery import Delivery, DeliveryResult
from schemas.errors import BusUnavailableError, ImpactbusError
from schemas.events import describe
from schemas.subjects import dead_subject, delivery_subject, log_subject
from services.bus import DELIVERIES, KV_RECIPIENTS, KV_SENT, Bus, map_nats_errors
from services.bus.failures import (
    Failures,
    RetryPolicy,
    dead_letter_limit,
    encode_dead_letter,
    message_initiative,
)
from services.bus.kv import Kv, open_kv, publish_put
from services.bus.markers import KeyLookup
from services.bus.streams import Msg, consumer_ack_wait
from services.pipeline.heartbeat import Heartbeat
from services.pipeline.notices import disable_target, owner_notice, owner_of
from services.pipeline.router import dead_letter
from services.pipeline.threads import Threads

log = logging.getLogger("impactbus.deliver")

MARKER_BUDGET_S = 5.0
"""How long a ``sent`` marker write is retried before the job is acked without it."""


class DeliveryWorker:
    """Sends one channel's jobs with one notifier."""

    def __init__(
        self,
        bus: Bus,
        notifier: Notifier,
        retry: RetryPolicy,
        sent: Kv,
        recipients: Kv,
        *,
        threads: Threads | None = None,
        ack_wait_s: float | None = None,
    ) -> None:
        self.bus = bus
        self.notifier = notifier
        self.channel = notifier.channel
        self.retry = retry
        self.sent_kv = sent
        self.presence = KeyLookup(bus.nc, sent.bucket)
        self.recipients_kv = recipients
        self.threads = threads
        self.heartbeat_s = max(0.1, (ack_wait_s or bus.settings.ack_wait_s) / 3)
        self.dead_limit = dead_letter_limit(bus.nc)
        # Sends whose marker is not stored yet are what a crash can duplicate: admit no
        # more of them than the notifier sends at once (EmailNotifier: its SMTP pool).
        limit = getattr(notifier, "concurrency", None)
        self._sending = asyncio.Semaphore(limit) if isinstance(limit, int) and limit > 0 else None
        self.counts: dict[str, int] = {
            "sent": 0,
            "retrying": 0,
            "dead": 0,
            "duplicate": 0,
            "disabled": 0,
            "notices": 0,
            "in_flight": 0,
        }
        self._in_flight: set[str] = set()

    @classmethod
    async def open(cls, bus: Bus, notifier: Notifier, retry: RetryPolicy) -> DeliveryWorker:
        """A worker over the hub's ``sent``, ``recipients`` and ``threads`` buckets."""
        # the consumer's, which may predate the settings
        ack_wait = await consumer_ack_wait(bus, DELIVERIES, notifier.channel)
        return cls(
            bus,
            notifier,
            retry,
            await open_kv(bus, KV_SENT),
            await open_kv(bus, KV_RECIPIENTS),
            threads=await Threads.open(bus),
            ack_wait_s=ack_wait,
        )

    async def handle(self, msg: Msg) -> None:
        """Send one job and settle it."""
        try:
            delivery = Delivery.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._unusable(msg, describe(exc))
            return
        if delivery.job_id in self._in_flight:
            # The same job is being sent by this process right now: a redelivery (the
            # server lost our in-progress acks, e.g. across its restart) or a job the
            # router published again. Sending both would duplicate: come back later.
            self.counts["in_flight"] += 1
            await msg.nak(delay=self.heartbeat_s * 3)
            return
        self._in_flight.add(delivery.job_id)
        try:
            await self._deliver(msg, delivery)
        finally:
            self._in_flight.discard(delivery.job_id)

    async def _deliver(self, msg: Msg, delivery: Delivery) -> None:
        attempt = msg.metadata.num_delivered
        sent = await self._already_sent(delivery.job_id)
        if sent is None:  # cannot tell (JetStream recovering): ask again later
            delay = self.retry.delay(1)
            await msg.nak(delay=delay)
            await self._log(delivery, "retrying", attempt, error="cannot check", retry_in_s=delay)
            return
        if sent:
            self.counts["duplicate"] += 1
            await msg.ack()
            return
        if self.threads is not None:
            delivery = await self.threads.attach(delivery)
        try:
            result = await self._send_and_mark(msg, delivery)
        except PermanentDeliveryError as exc:
            await self._dead(msg, delivery, exc.reason, str(exc), attempt)
            if exc.disable_target:
                await self._disable(delivery, exc.reason, str(exc))
            return
        except TransientDeliveryError as exc:
            await self._retry_or_dead(
                msg, delivery, exc.reason, str(exc), attempt, retry_after=exc.retry_after
            )
            return
        except Exception as exc:  # a bug or an unclassified library error: keep the job
            log.exception("%s: unexpected error sending %s", self.channel, delivery.job_id)
            await self._retry_or_dead(
                msg, delivery, "error", f"{type(exc).__name__}: {exc}", attempt, retry_after=None
            )
            return
        if self.threads is not None:
            await self.threads.record(delivery, result)
        await msg.ack()
        self.counts["sent"] += 1
        extra: dict[str, Any] = {"provider_id": result.provider_id, "outcome": result.outcome}
        if delivery.reply_to:
            extra["reply_to"] = delivery.reply_to
        await self._log(delivery, "sent", attempt, **extra)

    async def _send_and_mark(self, msg: Msg, delivery: Delivery) -> DeliveryResult:
        """Send, then store the ``sent`` marker; in-progress acks while that takes long."""
        heartbeat = Heartbeat(msg, self.heartbeat_s)
        try:
            async with self._sending or contextlib.nullcontext():
                result = await self.notifier.send(delivery)
                await self._mark_sent(delivery.job_id, result.provider_id)
            return result
        finally:
            heartbeat.cancel()

    async def _unusable(self, msg: Msg, error: str) -> None:
        """Dead-letter a job that is not a delivery (reason ``invalid``; never replayable)."""
        subject, payload = dead_letter(
            msg.subject, msg.data, error, {"channel": self.channel}, limit=self.dead_limit
        )
        meta = msg.metadata
        await self.bus.js.publish(
            subject,
            payload,
            headers={"Nats-Msg-Id": f"dead-{meta.stream}-{meta.consumer}-{meta.sequence.stream}"},
        )
        await msg.term()
        self.counts["dead"] += 1
        log.warning(
            "%s: dead letter for an unusable job on %s: %s", self.channel, msg.subject, error
        )

    def failures(self) -> Failures:
        """How the consumer loop settles a job whose handling raised.

        With the channel's retry policy: a job that keeps failing in the worker itself (a
        bug, the bus failing under it) is dead-lettered like one its provider refused.
        Its dead letter holds the job as queued, so it can be replayed.
        """

        def letter(msg: Msg, exc: BaseException) -> tuple[str, dict[str, Any]]:
            fields: dict[str, Any] = {"reason": "failed", "channel": self.channel}
            with contextlib.suppress(ValidationError):
                delivery = Delivery.model_validate_json(msg.data)
                fields.update(
                    job=json.loads(msg.data),
                    job_id=delivery.job_id,
                    recipient=delivery.recipient,
                    target=delivery.target.key,
                    event_id=delivery.event.id,
                )
            return dead_subject("failed", message_initiative(msg.subject)), fields

        return Failures(self.bus.nc, self.channel, self.retry, dead_letter=letter)

    async def _already_sent(self, job_id: str) -> bool | None:
        """Whether the job's ``sent`` marker exists; ``None`` if that cannot be told now.

        Right after a server restart the bucket may not answer for a moment: guessing
        "not sent" then would duplicate every job redelivered meanwhile. The lookups of
        one fetched batch go to the server as one request (:mod:`services.bus.markers`).
        """
        try:
            return await self.presence.present(job_id)
        except BusUnavailableError as exc:
            log.warning("%s: cannot check the sent marker of %s: %s", self.channel, job_id, exc)
            return None

    async def close(self) -> None:
        """Release what the worker holds on the connection."""
        await self.presence.close()

    async def _mark_sent(self, job_id: str, provider_id: str | None) -> None:
        # Awaited before the ack: a crash after this point cannot cause a duplicate. A
        # marker that cannot be written only weakens that guarantee, so it never fails
        # the send that already happened: retried for a few seconds (a server restart),
        # then given up.
        deadline = time.monotonic() + MARKER_BUDGET_S
        subject = self.sent_kv.subject(job_id)
        while True:
            left = deadline - time.monotonic()
            try:
                # the KV put as a plain JetStream publish through the shared ack multiplexer
                payload = (provider_id or "").encode()
                await publish_put(self.bus, subject, payload, max(left, 0.1))
            except ImpactbusError as exc:
                if left <= 0.3:
                    log.warning("%s: no sent marker for %s: %s", self.channel, job_id, exc)
                    return
                await asyncio.sleep(0.2)
            else:
                return

    async def _retry_or_dead(
        self,
        msg: Msg,
        delivery: Delivery,
        reason: str,
        error: str,
        attempt: int,
        *,
        retry_after: float | None,
    ) -> None:
        if attempt >= self.retry.attempts:
            await self._dead(msg, delivery, reason, error, attempt)
            return
        delay = self.retry.delay(attempt, retry_after)
        await msg.nak(delay=delay)
        self.counts["retrying"] += 1
        await self._log(delivery, "retrying", attempt, error=error, retry_in_s=round(delay, 3))

    async def _dead(
        self, msg: Msg, delivery: Delivery, reason: str, error: str, attempt: int
    ) -> None:
        job = json.loads(msg.data)  # as queued: without reply_to, ready to replay
        payload = {
            "reason": reason,
            "error": error,
            "attempts": attempt,
            "channel": self.channel,
            "job_id": delivery.job_id,
            "recipient": delivery.recipient,
            "target": delivery.target.key,
            "event_id": delivery.event.id,
            "failed_at": datetime.now(UTC).isoformat(),
            "subject": msg.subject,
            "job": job,
        }
        await self.bus.js.publish(
            dead_subject(_token(reason), delivery.event.initiative),
            encode_dead_letter(payload, msg.data, self.dead_limit),
            headers={"Nats-Msg-Id": f"dead-{delivery.job_id}-{msg.metadata.sequence.stream}"},
        )
        await msg.term()
        self.counts["dead"] += 1
        log.warning(
            "%s: dead letter for %s (%s): %s", self.channel, delivery.recipient, reason, error
        )
        await self._log(delivery, "dead", attempt, error=error, reason=reason)

    async def _disable(self, delivery: Delivery, reason: str, error: str) -> None:
        """Stop sending to a target that refused permanently; tell its owner once."""
        disabled = await disable_target(self.recipients_kv, delivery)
        if disabled is None:
            return  # already disabled (by another job's failure), or the contact changed
        recipient, revision = disabled
        self.counts["disabled"] += 1
        log.warning("%s: disabled %s of %s", self.channel, delivery.target.key, recipient.id)
        owner = await owner_of(self.recipients_kv, recipient)
        notice = owner_notice(
            recipient, owner, delivery, reason=reason, error=error, revision=revision
        )
        if notice is None:
            log.warning("%s: nobody to tell that %s was disabled", self.channel, recipient.id)
            return
        try:
            with map_nats_errors():
                await self.bus.js.publish(
                    delivery_subject("email", notice.event.initiative),
                    notice.model_dump_json().encode(),
                    headers={"Nats-Msg-Id": notice.job_id},
                )
        except ImpactbusError as exc:
            log.warning("%s: could not queue the notice to %s: %s", self.channel, owner.id, exc)
            return
        self.counts["notices"] += 1
        await self._log(notice, "queued", 0, channel="email", notice_for=recipient.id)

    async def _log(self, delivery: Delivery, status: str, attempt: int, **extra: Any) -> None:
        record = {
            "status": status,
            "at": datetime.now(UTC).isoformat(),
            "channel": self.channel,
            "recipient": delivery.recipient,
            "target": delivery.target.key,
            "job_id": delivery.job_id,
            "attempt": attempt,
            "event": delivery.event.id,
            **extra,
        }
        with contextlib.suppress(Exception):
            await self.bus.nc.publish(log_subject(delivery.event.id), json.dumps(record).encode())


def _token(reason: str) -> str:
    cleaned = "".join(
        c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in reason.lower()
    )[:32]
    return cleaned or "failed"
