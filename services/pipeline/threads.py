"""Threads: follow-ups about one topic reply to the topic's first message at each target.

A thread is (initiative, kind, topic) at one target on one channel. The first message
sent in it is remembered in the ``threads`` KV bucket under :func:`thread_key`: its email
``Message-ID`` or its Slack ``ts``. Later deliveries in the same thread get it as
``Delivery.reply_to``; the email notifier turns that into ``In-Reply-To``/``References``
and the Slack notifier into ``thread_ts``.

Which message becomes "first" is decided by a KV ``create`` (compare-and-set on "no such
key"): two workers sending the first two messages of a topic at the same moment both send
them unthreaded, but only one is recorded, and every later message threads under it.

Not threaded: digests (they span topics) and webhooks (receivers thread by event data).
Looking the thread up is best effort: if the bucket cannot be read, the message goes out
unthreaded rather than late.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections import OrderedDict
from typing import Final

from schemas.delivery import Delivery, DeliveryResult
from schemas.errors import BusUnavailableError, ConflictError, NotFoundError
from services.bus import KV_THREADS, Bus
from services.bus.kv import Kv, open_kv

log = logging.getLogger("impactbus.threads")

THREADED_CHANNELS: Final = frozenset({"email", "slack"})
_KNOWN_MAX: Final = 100_000


def thread_key(delivery: Delivery) -> str | None:
    """The ``threads`` key of the delivery's thread, or ``None`` if it is not threaded.

    The key is a hash of (initiative, kind, topic, channel, target key), so it is a valid
    KV key whatever the target looks like, and reveals no address.
    """
    if delivery.rendered is not None or delivery.digest_period is not None:
        return None
    channel = delivery.target.channel
    if channel not in THREADED_CHANNELS:
        return None
    event = delivery.event
    parts = (event.initiative, event.kind, event.topic, channel, delivery.target.key)
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]


class Threads:
    """Looks up and records the first message of each thread."""

    def __init__(self, kv: Kv) -> None:
        self.kv = kv
        # A thread's first message never changes once recorded: remember the ones seen,
        # so a busy topic costs one lookup per target, not one per message.
        self._known: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def _remember(self, key: str, first: tuple[str, str]) -> None:
        self._known[key] = first
        self._known.move_to_end(key)
        if len(self._known) > _KNOWN_MAX:
            self._known.popitem(last=False)

    @classmethod
    async def open(cls, bus: Bus) -> Threads:
        """The threads of the hub behind ``bus``."""
        return cls(await open_kv(bus, KV_THREADS))

    async def attach(self, delivery: Delivery) -> Delivery:
        """``delivery`` with ``reply_to`` set if its thread already has a first message."""
        key = thread_key(delivery)
        if key is None or delivery.reply_to:
            return delivery
        first = self._known.get(key)
        if first is None:
            try:
                entry = await self.kv.get(key)
            except NotFoundError:
                return delivery
            except BusUnavailableError as exc:
                log.warning("threads: cannot look up %s (%s); sending unthreaded", key, exc)
                return delivery
            first = _decode(entry.value)
            if first is not None:
                self._remember(key, first)
        if first is None or first[1] == delivery.job_id:
            # A redelivered first message must not reply to itself.
            return delivery
        return delivery.model_copy(update={"reply_to": first[0]})

    async def record(self, delivery: Delivery, result: DeliveryResult) -> bool:
        """Remember ``result`` as its thread's first message, unless one already is.

        Returns:
            Whether this message became the thread's first.
        """
        key = thread_key(delivery)
        if key is None or delivery.reply_to or not result.provider_id:
            return False
        if result.outcome != "sent" and delivery.target.channel != "email":
            # The dev outbox's Slack "ts" is a job id, not a real ts: never thread on it.
            return False
        value = json.dumps({"ref": result.provider_id, "job_id": delivery.job_id}).encode()
        with contextlib.suppress(BusUnavailableError):
            try:
                await self.kv.create(key, value)
            except ConflictError:
                return False  # another worker's message was first
            self._remember(key, (result.provider_id, delivery.job_id))
            return True
        return False


def _decode(value: bytes | None) -> tuple[str, str] | None:
    try:
        data = json.loads(value or b"")
        return str(data["ref"]), str(data.get("job_id", ""))
    except (ValueError, KeyError, TypeError):
        return None
