"""Reading one subject's messages out of a stream in one round trip (batched direct get).

A digest run needs every item waiting on ``digest.<recipient>``. Creating a consumer per
recipient costs milliseconds each; the server's batched direct get (nats-server 2.11+,
stream with ``allow_direct``) returns up to ``batch`` messages of one subject in one
request, which keeps 10,000 digest runs cheap. The answers of all reads of a connection
come back on one reply subscription (:class:`services.bus.acks.ReplyInbox`), not on one
subscription per read.

The items themselves are :func:`digest_item` payloads: the event's JSON exactly as it was
accepted, spliced in front of the routing fields. :func:`split_digest_item` takes them
apart again without parsing the event, so a digest run can reuse one parsed event for
every recipient it was routed to.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import nats.errors
from nats.aio.client import Client

from schemas.subjects import is_wildcard
from services.bus import Bus
from services.bus.acks import PerConnection, RawHeaders, ReplyInbox, within
from services.bus.apisubjects import direct_get
from services.bus.natsclient import header_value, inline_status, parse_headers

EOB_STATUS = "204"
_HEAD: Final = b'{"event":'
_FIRST_FIELD: Final = b',"recipient":'


def digest_item(raw_event: bytes, fields: dict[str, Any]) -> bytes:
    """``{"event":<raw_event>,"recipient":...,<other fields>}``; ``recipient`` first.

    The event JSON is spliced in as received (already validated) instead of being
    re-serialised once per target: fan-out cost stays flat in the event's size.
    """
    if next(iter(fields), None) != "recipient":
        raise ValueError("the routing fields must start with 'recipient'")
    rest = json.dumps(fields, separators=(",", ":")).encode()
    return _HEAD + raw_event + b"," + rest[1:]


def split_digest_item(payload: bytes) -> tuple[bytes, Mapping[str, Any]]:
    """The (event JSON, routing fields) of a :func:`digest_item` payload.

    The fields are JSON strings, in which a quote is always escaped, so the last
    ``,"recipient":`` of the payload is where the fields begin, whatever the event holds.
    The fields mapping is shared between calls: read it, don't change it.

    Raises:
        ValueError: ``payload`` is not laid out as :func:`digest_item` makes it.
    """
    cut = payload.rfind(_FIRST_FIELD)
    if not payload.startswith(_HEAD) or cut < len(_HEAD):
        raise ValueError("not a digest item")
    return payload[len(_HEAD) : cut], _fields(payload[cut + 1 :])


@lru_cache(maxsize=1024)
def _fields(rest: bytes) -> Mapping[str, Any]:
    # the same few field sets (a recipient's subscriptions) come back for each item
    fields: dict[str, Any] = json.loads(b"{" + rest)  # "{" ...: an object or an error
    return fields


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
    after_seq: int = 0,
    up_to_seq: int | None = None,
    batch: int = 1000,
    wait_s: float = 5.0,
) -> list[StoredMsg]:
    """Every message on ``subject`` in ``stream``, oldest first.

    Only those after sequence ``after_seq`` and, if given, up to ``up_to_seq``.

    Raises:
        TimeoutError: the server did not answer within ``wait_s``.
        nats.errors.Error: the request failed (no such stream, ...).
    """
    reader = _reader(bus.nc)
    out: list[StoredMsg] = []
    start = after_seq + 1
    while True:
        got, more = await reader.batch(stream, subject, start, batch, up_to_seq, wait_s)
        out.extend(got)
        if not more or not got:
            return out
        start = got[-1].seq + 1


class _Read:
    """One batch on its way: collected in the reply callback, awaited once."""

    __slots__ = ("batch", "cut", "done", "out", "subject", "up_to_seq")

    def __init__(self, subject: str, batch: int, up_to_seq: int | None) -> None:
        self.batch = batch
        self.up_to_seq = up_to_seq
        # a literal subject is every message's: no need to read it from each one's headers
        self.subject = None if is_wildcard(subject) else subject
        self.out: list[StoredMsg] = []
        self.cut = False  # a message past up_to_seq came: later ones wait for the next run
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def add(self, headers: RawHeaders, data: bytes) -> None:
        if self.done.done():
            return  # an answer that came after its request timed out
        status = inline_status(headers)
        if status == EOB_STATUS:  # end of batch: more may follow if the batch was full
            self.done.set_result(len(self.out) == self.batch and not self.cut)
        elif status == "404":  # no (more) messages
            self.done.set_result(False)
        elif status is not None:
            description = (parse_headers(headers) or {}).get("Description", "")
            self.done.set_exception(
                nats.errors.Error(f"direct get answered {status} {description}")
            )
        else:
            seq = int(header_value(headers, b"Nats-Sequence") or 0)
            if self.cut or (self.up_to_seq is not None and seq > self.up_to_seq):
                self.cut = True
            else:
                subject = self.subject or header_value(headers, b"Nats-Subject") or ""
                self.out.append(StoredMsg(seq, subject, data))


class _Reader:
    """The batched direct gets of one connection, answered on one reply subscription."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._inbox = ReplyInbox(nc, self._on_reply)
        self._reads: dict[str, _Read] = {}

    async def batch(  # noqa: PLR0917 - private helper, called once
        self,
        stream: str,
        subject: str,
        start: int,
        batch: int,
        up_to_seq: int | None,
        wait_s: float,
    ) -> tuple[list[StoredMsg], bool]:
        if not self._inbox.started:
            await self._inbox.start()
        token, reply = self._inbox.new()
        read = self._reads[token] = _Read(subject, batch, up_to_seq)
        req = {"seq": start, "next_by_subj": subject, "batch": batch}
        try:
            await self._nc.publish(direct_get(stream), json.dumps(req).encode(), reply=reply)
            more = await within(read.done, wait_s, f"no answer from stream {stream} in time")
            return read.out, more
        finally:
            del self._reads[token]

    def _on_reply(self, token: str, headers: RawHeaders, data: bytes) -> None:
        read = self._reads.get(token)
        if read is not None:
            read.add(headers, data)


_reader: Final[PerConnection[_Reader]] = PerConnection(_Reader)
