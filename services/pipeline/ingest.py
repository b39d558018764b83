"""Putting events on the bus: the one code path of the CLI, the HTTP API and the web form.

Each event is published to its subject with ``Nats-Msg-Id`` = hash(source, id), so a retry
(ours, after a timeout during a leader election, or a client's) is stored once. Batches are
pipelined: all publishes go out, then all acks are awaited (:mod:`services.bus.acks`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from schemas.errors import BusUnavailableError
from schemas.events import Event
from services.bus import EVENTS, Bus, hub_error
from services.bus.acks import ack_mux

RETRIES = 3


@dataclass(frozen=True, slots=True)
class Published:
    """Where an event was stored."""

    id: str
    subject: str
    sequence: int
    duplicate: bool


async def publish_event(bus: Bus, event: Event) -> Published:
    """Publish one event and wait for JetStream's acknowledgement.

    Raises:
        BusUnavailableError: JetStream did not acknowledge after retries.
    """
    return (await publish_events(bus, [event]))[0]


async def publish_events(bus: Bus, events: list[Event]) -> list[Published]:
    """Publish events pipelined; retry the unacknowledged ones with the same ids.

    Raises:
        BusUnavailableError: some event was not acknowledged after retries.
    """
    results: dict[int, Published] = {}
    todo = list(range(len(events)))
    error: BaseException | None = None
    mux = ack_mux(bus.nc)
    for attempt in range(RETRIES):
        sent: list[tuple[int, str]] = []
        for i in todo:
            e = events[i]
            try:
                token = await mux.publish(
                    e.nats_subject,
                    e.model_dump_json().encode(),
                    {"Nats-Msg-Id": e.key, "Nats-Expected-Stream": EVENTS},
                )
            except Exception as exc:
                if hub_error(exc) is None:
                    raise  # not the bus: a bug, not an outage
                error = exc
                break
            sent.append((i, token))
        acks = await mux.gather([t for _, t in sent], bus.settings.publish_timeout_s)
        failed = []
        for (i, _), ack in zip(sent, acks, strict=True):
            if isinstance(ack, BaseException):
                error = ack
                failed.append(i)
            else:
                results[i] = Published(events[i].id, events[i].nats_subject, ack.seq, ack.duplicate)
        todo = failed + [i for i in todo if i not in results and i not in failed]
        if not todo:
            break
        await asyncio.sleep(0.2 * (attempt + 1))  # back off before retrying with the same ids
    if todo:
        raise BusUnavailableError(
            f"JetStream did not acknowledge {len(todo)} event(s): {error or 'timeout'}"
        )
    return [results[i] for i in range(len(events))]
