"""KV lookups of many keys in one round trip.

Every delivery job is checked against its ``sent`` marker before it is sent, and every
digest run reads its recipient's state. One KV ``get`` each is a request-reply each, and
for a delivery worker it cost about as much CPU as composing the message. Lookups made in
the same turn of the event loop (the jobs of one fetch, the concurrent digest runs) are
gathered by :class:`KeyLookup` and asked for at once: a batched direct get with
``multi_last`` (nats-server 2.11+, a bucket with ``allow_direct``) returns the last
message of each named key that has one, then an end of batch. A key whose last message
is a delete, a purge or a TTL expiry marker has no value, as ``KeyValue.get`` would have
it, but its revision is kept: a compare-and-set writes after it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Final, NamedTuple

import nats.errors
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

from services.bus.acks import RawHeaders, ReplyInbox, within
from services.bus.apisubjects import direct_get, kv_prefix, kv_stream
from services.bus.errors import hub_error
from services.bus.natsclient import parse_headers

MAX_BATCH: Final = 256
"""Keys asked for in one request (the request stays a few KiB)."""


class Entry(NamedTuple):
    """The last message of a key: its value (``None`` after a delete) and revision."""

    value: bytes | None
    revision: int


class _Ask:
    __slots__ = ("done", "found")

    def __init__(self, done: asyncio.Future[dict[str, Entry]]) -> None:
        self.found: dict[str, Entry] = {}
        self.done = done


class KeyLookup:
    """Batched lookups of the last entry of keys of one KV bucket.

    Args:
        nc: the connection.
        bucket: the KV bucket (its stream must allow direct gets).
        timeout_s: how long one batch may take before its lookups fail.
    """

    def __init__(self, nc: Client, bucket: str, *, timeout_s: float = 2.0) -> None:
        self._nc = nc
        self._api = direct_get(kv_stream(bucket))
        self._prefix = kv_prefix(bucket)
        self._timeout_s = timeout_s
        self._waiting: dict[str, list[asyncio.Future[Entry | None]]] = {}
        self._flush_scheduled = False
        self._asks: dict[str, _Ask] = {}
        self._inbox = ReplyInbox(nc, self._on_reply)
        self._tasks: set[asyncio.Task[None]] = set()

    async def present(self, key: str) -> bool:
        """Whether ``key`` has a current value.

        Raises:
            BusUnavailableError: the server did not answer in time, or the request could
                not be sent.
        """
        entry = await self.last(key)
        return entry is not None and entry.value is not None

    async def last(self, key: str) -> Entry | None:
        """The last entry of ``key`` (value ``None`` if deleted), ``None`` if it never had one.

        Raises:
            BusUnavailableError: the server did not answer in time, or the request could
                not be sent.
        """
        future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        waiting, self._waiting = self._waiting, {}
        keys = list(waiting)
        for start in range(0, len(keys), MAX_BATCH):
            chunk = keys[start : start + MAX_BATCH]
            task = asyncio.create_task(self._settle(chunk, {k: waiting[k] for k in chunk}))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _settle(
        self, keys: list[str], waiting: dict[str, list[asyncio.Future[Entry | None]]]
    ) -> None:
        try:
            found = await self._query(keys)
        except (TimeoutError, nats.errors.Error) as exc:
            # the callers sit above the bus: they get the hub's error
            mapped = hub_error(exc) or exc
            for futures in waiting.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(mapped)
            return
        for key, futures in waiting.items():
            for f in futures:
                if not f.done():
                    f.set_result(found.get(key))

    async def _query(self, keys: list[str]) -> dict[str, Entry]:
        if not self._inbox.started:
            await self._inbox.start()
        token, reply = self._inbox.new()
        ask = _Ask(asyncio.get_running_loop().create_future())
        self._asks[token] = ask
        request = {"multi_last": [self._prefix + k for k in keys], "batch": len(keys)}
        try:
            await self._nc.publish(self._api, json.dumps(request).encode(), reply=reply)
            return await within(ask.done, self._timeout_s, "no answer from the KV bucket in time")
        finally:
            self._asks.pop(token, None)

    def _on_reply(self, token: str, raw: RawHeaders, data: bytes) -> None:
        ask = self._asks.get(token)
        if ask is None or ask.done.done():
            return  # an answer that came after its request timed out
        headers = parse_headers(raw) or {}
        status = headers.get("Status")
        if status is not None:
            if status in ("204", "404"):  # end of batch / none of the keys has a value
                ask.done.set_result(ask.found)
            else:
                ask.done.set_exception(nats.errors.Error(f"direct get answered {status}"))
            return
        subject = headers.get("Nats-Subject", "")
        if not subject.startswith(self._prefix):
            return
        deleted = headers.get(KV_OP) in (KV_DEL, KV_PURGE) or "Nats-Marker-Reason" in headers
        revision = int(headers.get("Nats-Sequence", 0))
        ask.found[subject[len(self._prefix) :]] = Entry(None if deleted else data, revision)

    async def close(self) -> None:
        """Stop listening for answers."""
        await self._inbox.close()
