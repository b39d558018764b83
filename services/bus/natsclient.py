"""nats-py's client with a faster header parser and direct reply subscriptions.

Every direct get reply, JetStream acknowledgement and KV entry arrives with headers, and
nats-py 2.16 parses them in pure Python with a generator per header name: ~13 us for the
six headers of a direct get reply on this machine, a third of what a digest run spends
reading its twenty items. :meth:`Client._parse_header_lines` gives the same result for
every input (tests/services/test_natsclient.py compares the two on a table and on random
header blocks) in about half the time: pure-ASCII blocks, the usual case, are decoded
once and split as text; anything else goes to nats-py's own parser.

(nats-py's ``fast-parse`` extra is no way out: with fast-mail-parser 0.10 it returns every
header value as a list, which breaks every reader of ``msg.headers``.)

**Direct subscriptions.** nats-py hands each message of a subscription to its callback
through a ``Msg`` object, an ``asyncio.Queue`` and a task that wakes up per message: about
half of the ~14 us of Python a direct get reply cost. The reply inboxes of
:mod:`services.bus.acks` only ever file an answer under its request and resolve a future, so
:meth:`Client.subscribe_direct` calls a plain function with the subject, the raw header
block and the payload, right where the read loop parsed the message. The handler reads
only the headers it needs (an item read needs two of six). A handler must be quick and
must not block; what it raises is logged, never raised into the read loop.

**Private internals.** Both rest on nats-py members it does not promise to keep
(``_parse_header_lines``, ``_process_headers``, ``_process_msg``, ``_remove_sub``,
``Subscription._id``); this module is the only one in the hub that touches them. nats-py
is pinned to the minor version they were checked on, and
tests/services/test_natsclient_contract.py names whichever of them a new release changes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Final

from nats.aio.client import Client as _NatsClient
from nats.aio.subscription import Subscription

log = logging.getLogger("impactbus.nats")

_UPSTREAM: Final = _NatsClient._parse_header_lines
_BYTES_SPACE: Final = " \t\n\r\x0b\x0c"  # what bytes.strip() strips
_NAME_SPACE: Final = re.compile("[\t\n\x0b\x0c\r\x1c-\x1f ]")  # str.isspace() in ASCII
# The usual block: "Name: Value\r\n" lines of printable ASCII, with nothing to strip.
# Checked and split by two C-level regex passes (1.9 us for a direct get reply's six
# headers, against 4.2 us line by line); any other block is parsed line by line.
_PLAIN_BLOCK: Final = re.compile("(?:[!-9;-~]+: [!-~][ -~]*(?<! )\r\n)*(?:\r\n)*")
_PAIR: Final = re.compile("([!-9;-~]+): ([ -~]*)\r\n")
_HDR_LINE: Final = b"NATS/1.0"
_STATUS_LEN: Final = 3

DirectHandler = Callable[[bytes, "bytes | None", bytes], None]
"""``handler(subject, header block, payload)`` of one message, called in the read loop.

The header block is raw (``NATS/1.0 ...``): read it with :func:`parse_headers`, or with
:func:`inline_status` and :func:`header_value` where one or two values are all it needs.
"""


def _header_lines(raw: bytes) -> dict[str, str]:
    if not raw.isascii():
        return _UPSTREAM(raw)
    text = raw.decode("ascii")
    if _PLAIN_BLOCK.fullmatch(text):
        return dict(_PAIR.findall(text))
    out: dict[str, str] = {}
    for line in text.split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip(_BYTES_SPACE)
        if _NAME_SPACE.search(name) is None:  # a name with a space in it is skipped
            out[name] = value.strip(_BYTES_SPACE)
    return out


def parse_headers(raw: bytes | None) -> dict[str, str] | None:
    """The header mapping of a message's header block, as nats-py's ``msg.headers`` has it.

    The status line (``NATS/1.0 404 No Messages``) gives ``Status`` and ``Description``.
    A synchronous ``Client._process_headers`` without its fast-mail-parser branch, which
    is broken (see the module notes); the tests compare the two.
    """
    if not raw:
        return None
    hdr: dict[str, str] | None = None
    rest = raw[len(_HDR_LINE) :]
    if rest[:1] == b" ":  # an inline status, maybe with headers after it
        line = raw[len(_HDR_LINE) + 1 :]
        status = line[:_STATUS_LEN].strip().decode()
        desc = line[_STATUS_LEN + 1 : len(line) - 4]
        hdr = {}
        if status.isdigit():
            hdr["Status"] = status
        cut = rest.find(b"\r\n")
        rest = rest[cut + 2 :]
        if desc:
            cut = desc.find(b"\r\n")
            if cut > 0:
                hdr["Description"] = desc[:cut].decode()
                hdr.update(_header_lines(desc[cut + 2 :]))
            else:
                hdr["Description"] = desc.decode()
    if len(rest) <= 2:
        return hdr
    parsed = _header_lines(raw[len(_HDR_LINE) + 2 :])
    if hdr:
        hdr.update(parsed)
    else:
        hdr = parsed
    return hdr or None


def inline_status(raw: bytes | None) -> str | None:
    """The status code of a header block's first line (``NATS/1.0 404 ...``), if it has one.

    What ``parse_headers(raw).get("Status")`` gives, except for a stored message with a
    header *named* ``Status``: nats-py takes that for a status, this does not.
    """
    if raw is None or raw[len(_HDR_LINE) : len(_HDR_LINE) + 1] != b" ":
        return None
    return (parse_headers(raw) or {}).get("Status")


def header_value(raw: bytes | None, name: bytes) -> str | None:
    """The value of header ``name`` in a header block, as :func:`parse_headers` has it.

    ``name`` must be a plain header name (no colon or space). A server-written header
    (``Nats-Sequence: 12``) is found by a search from the end: when nothing after its line
    mentions ``name`` again, that line is the one the mapping keeps (the last wins).
    Anything else is parsed.
    """
    if raw is None:
        return None
    at = raw.rfind(b"\r\n" + name + b": ")
    if at >= 0:
        start = at + len(name) + 4
        end = raw.find(b"\r\n", start)
        value = raw[start:end]
        if end > 0 and value.isascii() and raw.find(name, end) < 0:
            return value.decode().strip(_BYTES_SPACE)
    return (parse_headers(raw) or {}).get(name.decode())


class Client(_NatsClient):
    """``nats.aio.client.Client`` with faster headers and :meth:`subscribe_direct`."""

    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, DirectHandler] = {}

    _parse_header_lines = staticmethod(_header_lines)

    async def subscribe_direct(self, subject: str, handler: DirectHandler) -> Subscription:
        """Subscribe ``handler`` to ``subject``: called once per message, in the read loop.

        The subscription is nats-py's own (resubscribed after a reconnect, ended by its
        ``unsubscribe`` or a drain), but its messages never reach its queue.
        """
        sub = await self.subscribe(subject)
        self._direct[sub._id] = handler
        return sub

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self._direct.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
        else:
            self._deliver_direct(handler, subject, headers, data)

    def _deliver_direct(
        self, handler: DirectHandler, subject: bytes, headers: bytes | None, data: bytes
    ) -> None:
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        try:
            handler(subject, headers, data)
        except Exception:  # a handler's bug must not end the connection's read loop
            log.exception("a direct subscription's handler failed")

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._direct.pop(sid, None)
        super()._remove_sub(sid, max_msgs)


async def connect(servers: str, **options: Any) -> Client:
    """What ``nats.connect`` does, with :class:`Client`."""
    nc = Client()
    await nc.connect(servers, **options)
    return nc


__all__ = ["Client", "DirectHandler", "connect", "header_value", "inline_status", "parse_headers"]
