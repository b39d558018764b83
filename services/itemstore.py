"""Reading one subject's messages out of a stream in one round trip (batched direct get).

A digest run needs every item waiting on ``digest.<recipient>``. Creating a consumer per
recipient costs milliseconds each; the server's batched direct get (nats-server 2.11+,
stream with ``allow_direct``) returns up to ``batch`` messages of one subject in one
request, which keeps 10,000 digest runs cheap.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from nats.aio.msg import Msg

from services.bus import Bus

EOB_STATUS = "204"


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """One stored message."""

    seq: int
    subject: str
    data: bytes


async def read_subject(
    bus: Bus,
    stream: str,
    subject: str,
    *,
    up_to_seq: int | None = None,
    batch: int = 1000,
    wait_s: float = 5.0,
) -> list[StoredMsg]:
    """Every message on ``subject`` in ``stream`` (up to ``up_to_seq``), oldest first."""
    out: list[StoredMsg] = []
    start = 1
    while True:
        got, more = await _batch(bus, stream, subject, start, batch, up_to_seq, wait_s)
        out.extend(got)
        if not more or not got:
            return out
        start = got[-1].seq + 1


async def _batch(  # noqa: PLR0917 - private helper, called once
    bus: Bus,
    stream: str,
    subject: str,
    start: int,
    batch: int,
    up_to_seq: int | None,
    wait_s: float,
) -> tuple[list[StoredMsg], bool]:
    inbox = bus.nc.new_inbox()
    out: list[StoredMsg] = []
    done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    cut = False  # a message past up_to_seq came: later arrivals wait for the next run

    async def on_msg(msg: Msg) -> None:
        # collected in the callback and awaited once per batch: a queue and a wait_for
        # per message cost more than the message
        nonlocal cut
        if done.done():
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is not None:
            # 204 EOB ends the batch; 404 means no (more) messages
            done.set_result(status == EOB_STATUS and len(out) == batch and not cut)
            return
        seq = int(headers["Nats-Sequence"])
        if cut or (up_to_seq is not None and seq > up_to_seq):
            cut = True
            return
        out.append(StoredMsg(seq, headers["Nats-Subject"], msg.data))

    sub = await bus.nc.subscribe(inbox, cb=on_msg)
    req: dict[str, object] = {"seq": start, "next_by_subj": subject, "batch": batch}
    try:
        await bus.nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(req).encode(), reply=inbox)
        more = await asyncio.wait_for(done, wait_s)
        return out, more
    finally:
        await sub.unsubscribe()
