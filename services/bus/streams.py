"""Types of stream messages, for the packages above the bus.

Handlers above the bus receive nats-py's messages from the consumer loops
(:mod:`services.bus.consumer`); they name the type from here, so only the bus imports
nats.
"""

from __future__ import annotations

import contextlib
import time

import nats.errors
from nats.aio.msg import Msg
from nats.js import api

from services.bus.connection import Bus

__all__ = ["Msg", "consumer_ack_wait", "read_subject"]


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
    """
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
