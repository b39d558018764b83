"""A typed KV bucket: what the packages above the bus use instead of nats-py's ``KeyValue``.

:class:`Kv` keeps the bucket's name (``bucket``) and raises only the hub's errors
(:mod:`schemas.errors`): :class:`~schemas.errors.NotFoundError` for a key without a
value, :class:`~schemas.errors.ConflictError` for a lost compare-and-set and
:class:`~schemas.errors.BusUnavailableError` when NATS does not answer.
"""

from __future__ import annotations

from typing import NamedTuple

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from schemas.errors import NotFoundError
from services.bus.acks import publish_acked
from services.bus.apisubjects import kv_subject
from services.bus.connection import Bus
from services.bus.errors import hub_error, map_nats_errors


class KvEntry(NamedTuple):
    """A key's current value and its revision (the stream sequence a compare-and-set names)."""

    key: str
    value: bytes
    revision: int


class Kv:
    """One KV bucket of the hub.

    Args:
        bucket: the bucket's name.
        raw: nats-py's handle of the bucket (bus-internal).
        js: the JetStream context the bucket was opened with (bus-internal).
    """

    __slots__ = ("bucket", "js", "raw")

    def __init__(self, bucket: str, raw: KeyValue, js: JetStreamContext) -> None:
        self.bucket = bucket
        self.raw = raw
        self.js = js

    def subject(self, key: str) -> str:
        """The subject a put of ``key`` is published on."""
        return kv_subject(self.bucket, key)

    async def get(self, key: str) -> KvEntry:
        """The current value of ``key``.

        Raises:
            NotFoundError: the key has no value (never written, deleted, or not a valid key).
            BusUnavailableError: NATS did not answer.
        """
        with map_nats_errors():
            try:
                entry = await self.raw.get(key)
            except nats.js.errors.InvalidKeyError:
                raise NotFoundError(f"no key {key!r} in {self.bucket}") from None
        return KvEntry(key, entry.value or b"", entry.revision or 0)

    async def put(self, key: str, value: bytes) -> int:
        """Store ``value`` under ``key``; its new revision.

        Raises:
            BusUnavailableError: NATS did not answer.
        """
        with map_nats_errors():
            return await self.raw.put(key, value)

    async def create(self, key: str, value: bytes) -> int:
        """Store ``value`` under ``key`` only if the key has no value now; its revision.

        Raises:
            ConflictError: the key has a value.
            BusUnavailableError: NATS did not answer.
        """
        with map_nats_errors():
            return await self.raw.create(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        """Store ``value`` under ``key`` if its revision is still ``last``; the new revision.

        Raises:
            ConflictError: the key changed since ``last``.
            BusUnavailableError: NATS did not answer.
        """
        with map_nats_errors():
            return await self.raw.update(key, value, last=last)

    async def delete(self, key: str) -> None:
        """Delete ``key`` (a key without a value stays deleted).

        Raises:
            BusUnavailableError: NATS did not answer.
        """
        with map_nats_errors():
            await self.raw.delete(key)


async def open_kv(bus: Bus, bucket: str) -> Kv:
    """The hub's KV bucket ``bucket`` (declared by :meth:`Bus.ensure_topology`).

    Raises:
        NotFoundError: the bucket does not exist.
        BusUnavailableError: NATS did not answer.
    """
    with map_nats_errors():
        raw = await bus.kv(bucket)
    return Kv(bucket, raw, bus.js)


async def publish_put(bus: Bus, subject: str, value: bytes, wait_s: float) -> None:
    """A KV put as a plain JetStream publish through the connection's ack multiplexer.

    Cheaper than :meth:`Kv.put` (no request and inbox future per call) for writes made
    once per message, such as the ``sent`` markers. ``subject`` is :meth:`Kv.subject`.

    Raises:
        BusUnavailableError: not acknowledged within ``wait_s``, or not sent.
        InvalidInputError: JetStream refused the write.
    """
    try:
        await publish_acked(bus.nc, subject, value, None, wait_s)
    except (TimeoutError, nats.errors.Error) as exc:
        raise (hub_error(exc) or exc) from exc


def is_refused(outcome: object) -> bool:
    """Whether an ack multiplexer outcome is JetStream's refusal of the write.

    A write carrying an expected last revision is refused when another write came first.
    """
    return isinstance(outcome, nats.js.errors.APIError)
