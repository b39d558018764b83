"""The router: consume EVENTS, match subscriptions, publish one job per target.

One durable pull consumer (``router``) on EVENTS, fetched in batches; several router
processes share it. For each event:

* invalid (schema, or published on a subject that does not match its content) ->
  ``dead.invalid.<initiative>`` with the reason and the original payload;
* each matching subscription of a recipient who is not paused, on a channel that is not
  disabled -> ``deliver.<channel>.<initiative>`` (immediate) or ``digest.<recipient>``
  (digest mode).

Jobs carry a deterministic ``Nats-Msg-Id`` (hash of event, target and channel), published
pipelined; the event is acked only after every job's publish was acknowledged. A router
killed mid-fan-out leaves the event unacked; its redelivery republishes the same ids, which
JetStream's duplicate window drops. (After a nats-server restart the window no longer
knows jobs that were already consumed; the delivery workers' ``sent`` markers catch those.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any, Self

from schemas.directory import Recipient, version_of
from schemas.errors import InvalidInputError
from schemas.events import Event, parse_event
from schemas.subjects import (
    dead_subject,
    delivery_subject,
    digest_subject,
    log_subject,
)
from schemas.targets import CHANNELS, Channel
from services.bus import KV_RECIPIENTS, KV_SUBSCRIPTIONS, Bus
from services.bus.acks import AckMux, ack_mux
from services.bus.failures import (
    Failures,
    dead_letter_limit,
    encode_dead_letter,
    message_initiative,
)
from services.bus.itemstore import digest_item
from services.bus.kv import Kv, open_kv
from services.bus.streams import Msg
from services.bus.watch import KvMirror
from services.directory.matching import Route, SubscriptionIndex

log = logging.getLogger("impactbus.router")


class Router:
    """Matches events to subscriptions and publishes delivery jobs."""

    def __init__(
        self,
        bus: Bus,
        subscriptions: Kv,
        recipients: Kv,
        *,
        failures: Failures | None = None,
    ) -> None:
        self.bus = bus
        self.failures = failures or Failures(bus.nc, "router")
        self.index: SubscriptionIndex[Route] = SubscriptionIndex()
        # The router keeps no copy of its own: the index holds the (slotted) routes.
        self.subscriptions = KvMirror(
            subscriptions, Route.from_json, self._on_subscription, keep=False
        )
        self.recipients = KvMirror(recipients, Recipient.model_validate_json, self._on_recipient)
        self._targets: dict[tuple[str, str], tuple[str, bytes] | None] = {}
        self.counts: dict[str, int] = {"routed": 0, "jobs": 0, "dead": 0}

    @classmethod
    async def open(cls, bus: Bus, *, failures: Failures | None = None) -> Self:
        """A router over the hub's directory buckets (call :meth:`start` next).

        Args:
            bus: the hub's bus.
            failures: how events whose routing raised are settled (the hub's policy).
        """
        return cls(
            bus,
            await open_kv(bus, KV_SUBSCRIPTIONS),
            await open_kv(bus, KV_RECIPIENTS),
            failures=failures,
        )

    async def start(self) -> None:
        """Load subscriptions and recipients, then follow their changes."""
        await asyncio.gather(self.subscriptions.start(), self.recipients.start())
        log.info("router: %d subscriptions, %d recipients", len(self.index), len(self.recipients))

    async def stop(self) -> None:
        """Stop following the directory."""
        await asyncio.gather(self.subscriptions.stop(), self.recipients.stop())

    def _on_subscription(self, key: str, old: Route | None, new: Route | None) -> None:
        if new is None:
            self.index.remove(key)
        else:
            self.index.add(new)

    # ------------------------------------------------------------------ routing

    def plan(self, event: Event, raw: bytes, now: datetime) -> list[tuple[str, bytes, str]]:
        """The (subject, payload, msg id) of every job ``event`` fans out to."""
        jobs: dict[str, tuple[str, bytes, str]] = {}
        subject = event.nats_subject
        for sub in self.index.match(subject):
            recipient = self.recipients.get(sub.recipient)
            if recipient is None or recipient.is_paused(now):
                continue
            if sub.channel in recipient.disabled_channels:
                continue
            if sub.mode == "digest":
                msg_id = _hash("digest", event.key, recipient.id)
                payload = digest_item(
                    raw, {"recipient": recipient.id, "subscription": sub.id, "channel": sub.channel}
                )
                jobs.setdefault(msg_id, (digest_subject(recipient.id), payload, msg_id))
                continue
            cached = self._target(recipient, sub.channel)
            if cached is None:
                continue  # contact removed since subscribing: nothing to send to
            target_key, fields = cached
            msg_id = _hash(event.key, target_key, sub.channel)
            payload = b"".join(
                (
                    b'{"event":',
                    raw,
                    b",",
                    fields,
                    b',"subscription":',
                    json.dumps(sub.id).encode(),
                    b',"subscription_version":',
                    json.dumps(sub.version).encode(),
                    b"}",
                )
            )
            jobs.setdefault(
                msg_id, (delivery_subject(sub.channel, event.initiative), payload, msg_id)
            )
        return list(jobs.values())

    def _target(self, recipient: Recipient, channel: Channel) -> tuple[str, bytes] | None:
        """(target key, the job's recipient fields as JSON) — computed once per recipient.

        Building and validating a target (an email address above all) costs far more than
        routing; the cache is dropped whenever a recipient changes.
        """
        key = (recipient.id, channel)
        if key in self._targets:
            return self._targets[key]
        try:
            target = recipient.target(channel)
        except InvalidInputError:
            self._targets[key] = None
            return None
        fields = json.dumps(
            {
                "recipient": recipient.id,
                "recipient_name": recipient.name,
                "target": target.model_dump(mode="json"),
                "timezone": recipient.timezone,
                "locale": recipient.locale,
                "recipient_version": version_of(recipient.created),
            },
            separators=(",", ":"),
        )
        self._targets[key] = (target.key, fields[1:-1].encode())
        return self._targets[key]

    def _on_recipient(self, key: str, old: Recipient | None, new: Recipient | None) -> None:
        for channel in CHANNELS:
            self._targets.pop((key, channel), None)

    async def handle(self, msgs: list[Msg]) -> None:
        """Route one fetched batch; settle every message.

        An event whose routing raises is settled on its own by :attr:`failures` (retried
        with backoff if transient, else dead-lettered): it never fails the batch.
        """
        now = datetime.now(UTC)
        mux = ack_mux(self.bus.nc)
        limit = dead_letter_limit(self.bus.nc)
        pending: list[tuple[int, str]] = []
        logs: list[tuple[str, bytes]] = []
        failed: dict[int, BaseException] = {}
        for i, msg in enumerate(msgs):
            try:
                await self._route(i, msg, now=now, mux=mux, limit=limit, pending=pending, logs=logs)
            except Exception as exc:  # classified below, for this event only
                failed[i] = exc
        # bounded: an acknowledgement lost with the connection fails its event (retried
        # with backoff, routed again with the same job ids) instead of holding the router
        results = await mux.gather([t for _, t in pending], self.bus.settings.publish_timeout_s)
        for (i, _), r in zip(pending, results, strict=True):
            if isinstance(r, BaseException):
                failed.setdefault(i, r)
        for subject, payload in logs:
            with contextlib.suppress(Exception):  # the log is for people: never fails routing
                await self.bus.nc.publish(subject, payload)
        for i, msg in enumerate(msgs):
            failure = failed.get(i)
            if failure is None:
                await msg.ack()
            else:
                await self.failures.settle(msg, failure)

    async def _route(
        self,
        i: int,
        msg: Msg,
        *,
        now: datetime,
        mux: AckMux,
        limit: int,
        pending: list[tuple[int, str]],
        logs: list[tuple[str, bytes]],
    ) -> None:
        """Publish the jobs (or the dead letter) of one event; their tokens to ``pending``."""
        try:
            event = parse_event(msg.data, new=True)
            _check_subject(msg.subject, event)
        except InvalidInputError as exc:
            self.counts["dead"] += 1
            subject, payload = dead_letter(msg.subject, msg.data, str(exc), limit=limit)
            msg_id = _hash("invalid", msg.subject, str(msg.metadata.sequence.stream))
            pending.append((i, await mux.publish(subject, payload, {"Nats-Msg-Id": msg_id})))
            return
        jobs = self.plan(event, msg.data, now)
        for subject, payload, msg_id in jobs:
            pending.append((i, await mux.publish(subject, payload, {"Nats-Msg-Id": msg_id})))
        self.counts["jobs"] += len(jobs)
        self.counts["routed"] += 1
        logs.append(
            (
                log_subject(event.id),
                json.dumps(
                    {
                        "status": "routed",
                        "at": now.isoformat(),
                        "jobs": len(jobs),
                        "event": event.id,
                        "source": event.source,
                    }
                ).encode(),
            )
        )


def _check_subject(subject: str, event: Event) -> None:
    if event.nats_subject != subject:
        raise InvalidInputError(
            f"published on {subject!r} but the event is for {event.nats_subject!r}"
        )


def dead_letter(
    subject: str,
    data: bytes,
    error: str,
    extra: dict[str, Any] | None = None,
    *,
    limit: int,
) -> tuple[str, bytes]:
    """Subject and payload of a dead letter for a message that could not be used.

    The payload is at most ``limit`` bytes (see :func:`services.bus.failures.dead_letter_limit`):
    a larger original is cut, with its size and hash (:func:`encode_dead_letter`).
    """
    body = {
        "reason": "invalid",
        "error": error,
        "subject": subject,
        "failed_at": datetime.now(UTC).isoformat(),
        **(extra or {}),
    }
    return dead_subject("invalid", message_initiative(subject)), encode_dead_letter(
        body, data, limit
    )


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]
