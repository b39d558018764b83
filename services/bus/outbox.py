"""Reading the dev outbox back, and the publisher the outbox notifier records with.

The :class:`~notifiers.outbox.OutboxNotifier` composes each message and hands it to a
publish function; :func:`outbox_publisher` is the hub's (pipelined JetStream
publishes, nats-py errors in the hub's words). :func:`read_outbox` and
:func:`get_outbox_entry` serve the web page and ``impactbus outbox``.
"""

from __future__ import annotations

import json

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from notifiers.outbox import OutboxEntry, Publish
from schemas.errors import BusUnavailableError, NotFoundError
from schemas.subjects import outbox_subject
from services.bus.acks import publish_acked
from services.bus.errors import map_nats_errors
from services.bus.names import OUTBOX


def outbox_publisher(nc: Client, wait_s: float) -> Publish:
    """The outbox notifier's :data:`~notifiers.outbox.Publish` on ``nc``.

    Args:
        nc: the hub's connection.
        wait_s: how long to wait for JetStream's acknowledgement.
    """

    async def publish(subject: str, payload: bytes, headers: dict[str, str]) -> None:
        with map_nats_errors():
            await publish_acked(nc, subject, payload, headers, wait_s)

    return publish


async def read_outbox(
    js: JetStreamContext,
    channel: str | None = None,
    limit: int = 50,
) -> list[OutboxEntry]:
    """The newest ``limit`` outbox entries (of one channel, or all), oldest first.

    Each entry carries its stream sequence as ``seq``: the number :func:`get_outbox_entry`
    takes (``impactbus outbox show <n>``).

    Walks the stream backwards from its last sequence, one message get per sequence: a
    dev outbox is small (the stream keeps 10,000 messages) and this needs no consumer.

    Raises:
        BusUnavailableError: NATS could not be asked.
    """
    subject = outbox_subject(channel) if channel else None
    entries: list[OutboxEntry] = []
    try:
        state = (await js.stream_info(OUTBOX)).state
        seq = state.last_seq
        while seq >= max(state.first_seq, 1) and len(entries) < limit:
            try:
                msg = await js.get_msg(OUTBOX, seq=seq)
            except nats.js.errors.NotFoundError:  # aged out or deleted meanwhile
                msg = None
            seq -= 1
            if msg is None or msg.data is None or (subject and msg.subject != subject):
                continue
            entry = json.loads(msg.data)
            if isinstance(entry, dict):
                entries.append({**entry, "seq": msg.seq})
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BusUnavailableError(f"cannot read the outbox: {exc or type(exc).__name__}") from exc
    entries.reverse()
    return entries


async def get_outbox_entry(js: JetStreamContext, seq: int) -> OutboxEntry:
    """The outbox entry with stream sequence ``seq`` (the number :func:`read_outbox` gives).

    Raises:
        NotFoundError: no such entry (never recorded, or aged out of the stream).
        BusUnavailableError: NATS could not be asked.
    """
    try:
        msg = await js.get_msg(OUTBOX, seq=seq)
    except nats.js.errors.NotFoundError:
        raise NotFoundError(
            f"no outbox message {seq}: see the numbers `impactbus outbox` shows"
        ) from None
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BusUnavailableError(f"cannot read the outbox: {exc or type(exc).__name__}") from exc
    entry = json.loads(msg.data or b"null")
    if not isinstance(entry, dict):
        raise NotFoundError(f"outbox message {seq} is unreadable")
    return {**entry, "seq": seq}
