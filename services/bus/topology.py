"""What the hub declares on NATS: each stream's subjects and each durable consumer's filter.

Data, read by both :meth:`services.bus.Bus.ensure_topology` (with the sizes and policies
it adds from the settings) and the AsyncAPI export (:mod:`services.bus.asyncapi`), so the
document lists the subjects the server really has. tests/api/test_schema_export.py checks
the document's channels against the streams and consumers a real server ends up with.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from schemas.subjects import (
    DEAD_ROOT,
    DELIVER_ROOT,
    DIGEST_ROOT,
    EVENTS_ROOT,
    LOG_ROOT,
    OUTBOX_ROOT,
    TICK_ROOT,
    delivery_filter,
)
from schemas.targets import CHANNELS
from services.bus.names import (
    DEAD,
    DELIVERIES,
    DELIVERY_LOG,
    DIGEST_CONSUMER,
    DIGESTS,
    EVENTS,
    OUTBOX,
    ROUTER_CONSUMER,
    SCHEDULES,
)


class StreamDecl(NamedTuple):
    """One stream: its name, the subjects it stores and what it is for."""

    name: str
    subjects: tuple[str, ...]
    description: str


class ConsumerDecl(NamedTuple):
    """One durable consumer: its stream, name, filter (``None``: all of it) and purpose."""

    stream: str
    durable: str
    filter_subject: str | None
    description: str


STREAMS: Final[dict[str, StreamDecl]] = {
    s.name: s
    for s in (
        StreamDecl(EVENTS, (f"{EVENTS_ROOT}.>",), "initiative events: history, feeds, replay"),
        StreamDecl(DELIVERIES, (f"{DELIVER_ROOT}.>",), "one job per (event, target, channel)"),
        StreamDecl(DIGESTS, (f"{DIGEST_ROOT}.>",), "items waiting for a recipient's next digest"),
        StreamDecl(
            SCHEDULES,
            ("schedule.>", f"{TICK_ROOT}.>"),
            "server-side digest schedules and the ticks they fire",
        ),
        StreamDecl(DEAD, (f"{DEAD_ROOT}.>",), "dead letters"),
        StreamDecl(DELIVERY_LOG, (f"{LOG_ROOT}.>",), "per-event delivery status"),
        StreamDecl(OUTBOX, (f"{OUTBOX_ROOT}.>",), "dev outbox: what would have been sent"),
    )
}
"""Every stream of the hub, by name, in the order they are declared."""

CONSUMERS: Final[tuple[ConsumerDecl, ...]] = (
    ConsumerDecl(
        EVENTS, ROUTER_CONSUMER, None, "router: matches subscriptions, publishes delivery jobs"
    ),
    *(ConsumerDecl(DELIVERIES, c, delivery_filter(c), f"{c} delivery workers") for c in CHANNELS),
    ConsumerDecl(SCHEDULES, DIGEST_CONSUMER, f"{TICK_ROOT}.>", "digest: one run per tick"),
)
"""Every durable consumer of the hub, in the order they are declared."""


def stream_subjects(name: str) -> list[str]:
    """The subjects stream ``name`` stores (a fresh list, as a ``StreamConfig`` takes)."""
    return list(STREAMS[name].subjects)


def consumer(stream: str, durable: str) -> ConsumerDecl:
    """The declaration of durable consumer ``durable`` on ``stream``.

    Raises:
        KeyError: the hub declares no such consumer.
    """
    for decl in CONSUMERS:
        if (decl.stream, decl.durable) == (stream, durable):
            return decl
    raise KeyError(f"no durable consumer {durable!r} on stream {stream!r}")
