"""Pull-consumer loops over a durable JetStream consumer, batched, with graceful stop.

Why not faststream's ``PullSub`` here: its batch mode waits up to its timeout to fill a
batch (latency at low rates), and its per-batch ack policy cannot ack one message, nak
another with a delay and term a third. nats-py's ``fetch`` returns as soon as messages are
available, so these loops fetch in batches and settle each message themselves (measured
here: faststream ``PullSub(100)`` reaches about 0.4 of raw JetStream end to end, with a
batch handler about 0.8).

* :func:`run_batches` hands each fetched batch to one handler (the router: order kept).
* :func:`run_each` runs one task per message with at most ``max_in_flight`` at once and
  keeps fetching while slots are free (delivery workers: a slow send does not hold the
  next fetch).

A handler that raises does not hand its message back as it is: the loop settles it
through :class:`~services.bus.failures.Failures` (transient: ``nak(delay)`` with backoff up to
the policy's attempts; otherwise, or attempts used up: dead letter and ``term``). So no
message loops, whatever a handler does.

On stop, no new fetch starts; in-flight work gets ``grace`` seconds, and messages not
settled by then are nak'ed so another worker gets them at once (never terminated).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from services.bus import Bus
from services.bus.failures import Failures

log = logging.getLogger("impactbus.consumer")
FETCH_WAIT = 1.0


@dataclass
class ConsumerStats:
    """What a consumer loop did; read by health and metrics."""

    name: str
    fetched: int = 0
    last_fetch: float = field(default_factory=time.monotonic)
    errors: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    """The loop's :attr:`Failures.counts`: messages retried and dead-lettered."""


async def _bind(
    bus: Bus, stream: str, durable: str, stop: asyncio.Event, name: str
) -> nats.js.JetStreamContext.PullSubscription | None:
    delay = 0.2
    while not stop.is_set():
        try:
            return await bus.js.pull_subscribe_bind(
                durable=durable, stream=stream, pending_msgs_limit=100_000
            )
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning(
                "%s: cannot bind to %s/%s yet: %s", name, stream, durable, exc or type(exc).__name__
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5)
    return None


async def _fetch(
    sub: nats.js.JetStreamContext.PullSubscription,
    n: int,
    stats: ConsumerStats,
    stop: asyncio.Event,
) -> list[Msg]:
    try:
        msgs = await sub.fetch(n, timeout=FETCH_WAIT)
    except (TimeoutError, nats.errors.TimeoutError):
        msgs = []
    except (
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.js.errors.ServiceUnavailableError,
        nats.errors.NoRespondersError,
        nats.js.errors.APIError,
        nats.errors.Error,
    ) as exc:
        stats.errors += 1
        if stats.errors in (1, 10) or stats.errors % 100 == 0:
            log.warning("%s: fetch failed (%s), retrying", stats.name, exc or type(exc).__name__)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        msgs = []
    else:
        stats.errors = 0
    stats.last_fetch = time.monotonic()
    stats.fetched += len(msgs)
    return msgs


async def _hand_back(msgs: list[Msg]) -> None:
    """On stop only: unfinished work goes to another worker at once."""
    for m in msgs:
        if not m.is_acked:
            with contextlib.suppress(Exception):
                await m.nak()


def _failures(bus: Bus, failures: Failures | None, stats: ConsumerStats) -> Failures:
    failures = failures or Failures(bus.nc, stats.name)
    stats.failures = failures.counts
    return failures


async def run_batches(
    bus: Bus,
    stream: str,
    durable: str,
    handler: Callable[[list[Msg]], Awaitable[None]],
    *,
    stop: asyncio.Event,
    batch: int = 256,
    stats: ConsumerStats | None = None,
    failures: Failures | None = None,
) -> None:
    """Fetch batches and hand each to ``handler``, which settles every message.

    A handler that raises leaves its unsettled messages to ``failures`` (each classified
    on its own); a handler should settle a message that fails on its own the same way.
    """
    stats = stats or ConsumerStats(durable)
    settle = _failures(bus, failures, stats)
    sub = await _bind(bus, stream, durable, stop, stats.name)
    if sub is None:
        return
    try:
        while not stop.is_set():
            msgs = await _fetch(sub, batch, stats, stop)
            if not msgs:
                continue
            try:
                await handler(msgs)
            except Exception as exc:  # classified: retried or dead-lettered
                for msg in msgs:
                    if not msg.is_acked:
                        await settle.settle(msg, exc)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def run_each(
    bus: Bus,
    stream: str,
    durable: str,
    handler: Callable[[Msg], Awaitable[None]],
    *,
    stop: asyncio.Event,
    max_in_flight: int = 64,
    grace: float = 20.0,
    stats: ConsumerStats | None = None,
    failures: Failures | None = None,
) -> None:
    """Run ``handler`` per message, up to ``max_in_flight`` at once.

    The next fetch asks for all free slots, but only once at least a quarter of them are
    free: refilling one slot at a time would cost a fetch round trip per message.
    A message whose handler raises is settled by ``failures``.
    """
    stats = stats or ConsumerStats(durable)
    settle = _failures(bus, failures, stats)
    sub = await _bind(bus, stream, durable, stop, stats.name)
    if sub is None:
        return
    in_flight: dict[asyncio.Task[None], Msg] = {}
    min_batch = max(1, max_in_flight // 4)

    async def one(msg: Msg) -> None:
        try:
            await handler(msg)
        except Exception as exc:  # classified: retried or dead-lettered
            await settle.settle(msg, exc)

    try:
        while not stop.is_set():
            while len(in_flight) > max_in_flight - min_batch and not stop.is_set():
                await asyncio.wait(list(in_flight), return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                break
            msgs = await _fetch(sub, max_in_flight - len(in_flight), stats, stop)
            for msg in msgs:
                task = asyncio.create_task(one(msg))
                in_flight[task] = msg
                task.add_done_callback(lambda t: in_flight.pop(t, None))
    finally:
        if in_flight:
            _, pending = await asyncio.wait(list(in_flight), timeout=grace)
            unsettled = [in_flight[t] for t in pending if t in in_flight]
            for task in pending:
                task.cancel()
            await _hand_back(unsettled)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
