"""Stream reads and follows, and the message type, for the packages above the bus.

Handlers above the bus receive nats-py's messages from the consumer loops
(:mod:`services.bus.consumer`) and name their type as :data:`Msg` from here. The reads
(a subject's messages, a window of a filter for the feeds, the newest message on a
subject, the subjects a stream holds, readiness, consumer counts) and :func:`follow`
either answer ``None`` where the callers carry on without NATS, or raise the hub's
errors (:mod:`schemas.errors`), so only the bus imports nats.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from schemas.errors import BusUnavailableError
from services.bus.connection import Bus
from services.bus.errors import map_nats_errors

__all__ = [
    "FETCH_TIMEOUT_S",
    "Msg",
    "Window",
    "consumer_ack_wait",
    "consumer_counts",
    "follow",
    "last_data",
    "read_subject",
    "read_window",
    "readiness",
    "stored_subjects",
]


async def consumer_ack_wait(bus: Bus, stream: str, durable: str) -> float | None:
    """The ``ack_wait`` of a durable consumer as the server has it; ``None`` if unknown.

    A consumer keeps the settings it was created with, which may predate the hub's.
    """
    try:
        info = await bus.js.consumer_info(stream, durable)
    except (TimeoutError, nats.errors.Error):
        return None
    ack_wait: float | None = info.config.ack_wait
    return ack_wait


async def read_subject(
    bus: Bus, stream: str, subject: str, *, batch: int = 256, within: float = 10.0
) -> list[tuple[int, str, bytes]]:
    """Every message of ``stream`` on ``subject`` (wildcards allowed), oldest first.

    Reads for at most ``within`` seconds through a short-lived ephemeral pull consumer
    (no acks, in memory) that is deleted afterwards: one round trip per ``batch``
    messages.

    Returns:
        (stream sequence, subject, data) of each message.

    Raises:
        BusUnavailableError: NATS did not answer.
    """
    with map_nats_errors():
        return await _read_subject(bus, stream, subject, batch=batch, within=within)


async def _read_subject(
    bus: Bus, stream: str, subject: str, *, batch: int = 256, within: float = 10.0
) -> list[tuple[int, str, bytes]]:
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.ALL,
        inactive_threshold=60.0,
        mem_storage=True,
        num_replicas=1,
    )
    sub = await bus.js.pull_subscribe(subject, stream=stream, config=config)
    out: list[tuple[int, str, bytes]] = []
    name: str | None = None
    try:
        info = await sub.consumer_info()
        name = info.name
        remaining = int(info.num_pending or 0)
        deadline = time.monotonic() + within
        while remaining > 0 and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(min(batch, remaining), timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                break  # deleted (replayed, purged) since we counted
            for m in msgs:
                out.append((m.metadata.sequence.stream, m.subject, m.data))
            remaining -= len(msgs)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if name:
            with contextlib.suppress(Exception):
                await bus.js.delete_consumer(stream, name)
    return out


FETCH_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Window:
    """Messages of one subject filter read out of a stream, oldest first."""

    msgs: list[tuple[int, bytes]]
    """(stream sequence, data) of each message."""
    last_seq: int
    """The stream's last sequence when the read began."""


async def read_window(
    bus: Bus, stream: str, subject: str, since: int | datetime | None, limit: int
) -> Window:
    """Up to ``limit`` messages of ``stream`` matching ``subject``.

    ``since`` ``None`` reads the last ``limit`` matches; a sequence or a time reads the
    first ``limit`` from there on. Each read is a short-lived ephemeral consumer (in
    memory, no acks), deleted afterwards.

    Raises:
        BusUnavailableError: JetStream did not answer.
    """
    js = bus.js
    try:
        state = (await js.stream_info(stream)).state
        if since is None:
            if state.messages == 0:
                return Window([], state.last_seq)
            start, count = await _tail_start(
                js, stream, subject, limit, first=state.first_seq, last=state.last_seq
            )
            msgs = (await _read(js, stream, subject, start, count))[-limit:]
        else:
            msgs = await _read(js, stream, subject, since, limit)
    except (TimeoutError, nats.errors.Error) as exc:
        reason = str(exc) or type(exc).__name__
        raise BusUnavailableError(f"cannot read the {stream} stream: {reason}") from None
    return Window([(m.metadata.sequence.stream, m.data) for m in msgs], state.last_seq)


def _config(subject: str, start: int | datetime) -> api.ConsumerConfig:
    by_seq = isinstance(start, int)
    return api.ConsumerConfig(
        name=f"window-{secrets.token_hex(8)}",
        filter_subject=subject,
        ack_policy=api.AckPolicy.NONE,
        mem_storage=True,
        inactive_threshold=30.0,
        num_replicas=1,
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE
        if by_seq
        else api.DeliverPolicy.BY_START_TIME,
        opt_start_seq=start if isinstance(start, int) else None,
        opt_start_time=start if isinstance(start, datetime) else None,
    )


async def _count(js: JetStreamContext, stream: str, subject: str, start: int) -> int:
    """How many messages matching ``subject`` are stored from sequence ``start`` on."""
    info = await js.add_consumer(stream, _config(subject, start))
    with contextlib.suppress(TimeoutError, nats.errors.Error):
        await js.delete_consumer(stream, info.name)
    return int(info.num_pending or 0)


async def _tail_start(
    js: JetStreamContext, stream: str, subject: str, limit: int, *, first: int, last: int
) -> tuple[int, int]:
    """A start sequence followed by ``limit`` to ``4 * limit`` matches (or all of them).

    Returns:
        The start sequence and how many matches follow it.
    """
    window, hi = limit, last + 1
    while True:
        lo = max(first, last + 1 - window)
        found = await _count(js, stream, subject, lo)
        if found >= limit:
            break
        if lo <= first:
            return first, found
        hi, window = lo, window * 4
    while found > 4 * limit and hi - lo > 1:  # uneven history: narrow it down
        mid = (lo + hi) // 2
        at_mid = await _count(js, stream, subject, mid)
        if at_mid >= limit:
            lo, found = mid, at_mid
        else:
            hi = mid
    return lo, found


async def _read(
    js: JetStreamContext, stream: str, subject: str, start: int | datetime, limit: int
) -> list[Msg]:
    info = await js.add_consumer(stream, _config(subject, start))
    try:
        wanted = min(limit, int(info.num_pending or 0))
        if wanted == 0:
            return []
        sub = await js.pull_subscribe_bind(consumer=info.name, stream=stream)
        try:
            msgs: list[Msg] = []
            while len(msgs) < wanted:
                msgs += await sub.fetch(wanted - len(msgs), timeout=FETCH_TIMEOUT_S)
            return msgs[:wanted]
        finally:
            await sub.unsubscribe()
    finally:
        with contextlib.suppress(TimeoutError, nats.errors.Error):
            await js.delete_consumer(stream, info.name)


async def readiness(bus: Bus, stream: str, timeout_s: float) -> str | None:
    """``None`` when the connection is up and ``stream`` answers, else why not (one line)."""
    if not bus.connected:
        return "NATS disconnected"
    try:
        await asyncio.wait_for(bus.js.stream_info(stream), timeout_s)
    except nats.js.errors.NotFoundError:
        return f"stream {stream} missing"
    except (TimeoutError, nats.errors.Error) as exc:
        return f"JetStream not answering: {type(exc).__name__}"
    return None


async def consumer_counts(
    bus: Bus, stream: str, durable: str, timeout_s: float
) -> tuple[int, int] | None:
    """(pending, ack pending) of a durable consumer; ``None`` if the server did not say."""
    try:
        info = await asyncio.wait_for(bus.js.consumer_info(stream, durable), timeout_s)
    except (TimeoutError, nats.errors.Error):
        return None
    return info.num_pending or 0, info.num_ack_pending or 0


async def last_data(bus: Bus, stream: str, subject: str) -> bytes | None:
    """The data of the newest message of ``stream`` on ``subject``.

    ``None`` when there is none, or NATS does not answer: callers show what they can
    without it.
    """
    try:
        msg = await bus.js.get_last_msg(stream, subject)
    except (TimeoutError, nats.errors.Error):
        return None
    return msg.data or b""


async def stored_subjects(bus: Bus, stream: str, subjects_filter: str) -> list[str] | None:
    """The subjects of ``stream`` matching the filter that hold messages now.

    ``None`` when NATS does not answer.
    """
    try:
        info = await bus.js.stream_info(stream, subjects_filter=subjects_filter)
    except (TimeoutError, nats.errors.Error):
        return None
    return list((info.state.subjects or {}) if info.state else {})


async def follow(
    bus: Bus, stream: str, pattern: str, *, last: int = 0
) -> AsyncGenerator[Msg, None]:
    """Subscribe to ``stream``'s messages on ``pattern``; they come as they are stored.

    An ordered push consumer, from the last ``last`` stored messages on (none: only new
    ones). Subscribed when this returns; ``aclose()`` the generator to unsubscribe.

    Raises:
        BusUnavailableError: NATS did not answer; also raised by the generator when the
            connection closes under it (nats-py's own iterator just ends then, which would
            read as "no more messages").
    """
    with map_nats_errors():
        policy = api.DeliverPolicy.NEW
        opt_start: int | None = None
        if last:
            info = await bus.js.stream_info(stream)
            opt_start = max(1, info.state.last_seq - last + 1)
            policy = api.DeliverPolicy.BY_START_SEQUENCE
        sub = await bus.js.subscribe(
            pattern,
            stream=stream,
            ordered_consumer=True,
            deliver_policy=policy,
            config=api.ConsumerConfig(opt_start_seq=opt_start),
        )
    return _follow(bus, sub, pattern)


async def _follow(
    bus: Bus, sub: JetStreamContext.PushSubscription, pattern: str
) -> AsyncGenerator[Msg, None]:
    try:
        async for msg in sub.messages:
            yield msg
    finally:
        if not bus.nc.is_closed:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    raise BusUnavailableError(f"NATS went away while following {pattern}")
