"""An in-memory mirror of a KV bucket, kept current by a KV watch.

The router mirrors ``subscriptions`` and ``recipients``, API processes mirror ``tokens``:
a change made anywhere reaches every process within milliseconds, without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

from services.bus.apisubjects import kv_all, kv_prefix, kv_stream
from services.bus.kv import Kv

log = logging.getLogger("impactbus.watch")
T = TypeVar("T")


class KvMirror(Generic[T]):
    """Every key of one bucket, parsed, in memory."""

    def __init__(
        self,
        kv: Kv,
        parse: Callable[[bytes], T],
        on_change: Callable[[str, T | None, T | None], None] | None = None,
        *,
        keep: bool = True,
    ) -> None:
        """Mirror ``kv``.

        Args:
            kv: the bucket.
            parse: bytes -> value; raises ``ValueError`` for an unreadable entry (skipped).
            on_change: called with (key, old, new) for every change (``new`` None: deleted).
            keep: keep the values (``get``/``values``); ``False`` when ``on_change`` stores
                them elsewhere (then ``old`` is always None).
        """
        self._keep = keep
        self._kv = kv
        self._parse = parse
        self._on_change = on_change
        self._items: dict[str, T] = {}
        self._sub: JetStreamContext.PushSubscription | None = None
        self._prefix = ""
        self.ready = asyncio.Event()

    def get(self, key: str) -> T | None:
        """The current value of ``key``."""
        return self._items.get(key)

    def values(self) -> Iterator[T]:
        """Every current value."""
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    async def start(self) -> None:
        """Load every key, then follow changes in the background.

        An ordered push consumer on the bucket's subjects (last value per key, then every
        change), applied in its callback: nats-py's ``KeyWatcher`` goes through a queue and
        an ``Entry`` object per key, which costs more than the parse when 100,000 keys load.
        """
        bucket = self._kv.bucket
        self._prefix = kv_prefix(bucket)
        self._sub = await self._kv.js.subscribe(
            kv_all(bucket),
            stream=kv_stream(bucket),
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            cb=self._on_msg,
            inactive_threshold=300,
        )
        info = await self._sub.consumer_info()
        if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
            # nothing to load. When the server has already pushed every value
            # (``num_pending`` 0, ``delivered`` > 0) the values may still be on the wire
            # behind this reply: the callback sets ``ready`` when it applies the last one
            # (its ``num_pending`` is 0). nats-py's own watcher checks the client's
            # received count here instead and can end the initial load too early.
            self.ready.set()
        await self.ready.wait()

    async def _on_msg(self, msg: Msg) -> None:
        key = msg.subject[len(self._prefix) :]
        op = (msg.headers or {}).get(KV_OP) or _marker_op(msg.headers)
        self._apply(key, None if op in (KV_DEL, KV_PURGE) else msg.data)
        if not self.ready.is_set() and msg.metadata.num_pending == 0:
            self.ready.set()

    def _apply(self, key: str, value: bytes | None) -> None:
        old = self._items.get(key)
        if not value:
            self._items.pop(key, None)
            new = None
        else:
            try:
                new = self._parse(value)
            except ValueError as exc:
                log.warning("ignoring unreadable %s entry %r: %s", self._kv.bucket, key, exc)
                return
            if self._keep:
                self._items[key] = new
        if self._on_change is not None:
            self._on_change(key, old, new)

    async def stop(self) -> None:
        """Stop following changes."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def snapshot(kv: Kv) -> dict[str, bytes]:
    """Every current key and value of ``kv``, read once (deleted keys left out).

    One ordered consumer over the bucket (last value per key), not a key listing followed
    by a get per key: fewer round trips, and a key is never left out.
    """
    mirror: KvMirror[bytes] = KvMirror(kv, bytes)
    try:
        await mirror.start()
    finally:
        await mirror.stop()
    return dict(mirror._items)


def _marker_op(headers: dict[str, str] | None) -> str | None:
    # nats-server 2.11+ marks TTL/age expiry with Nats-Marker-Reason instead of KV-Operation
    reason = (headers or {}).get("Nats-Marker-Reason")
    return KV_PURGE if reason in ("MaxAge", "Purge", "Remove") else None
