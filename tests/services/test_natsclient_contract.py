"""The nats-py internals services/bus/natsclient.py relies on are still there and behave.

``services.bus.natsclient.Client`` overrides private methods of nats-py's client and reads
a private attribute of its subscriptions; nothing in nats-py promises to keep them. This
file says what the fast path needs from the installed nats-py, so that a new release
fails here, naming what changed, rather than in every reply inbox at run time:

- the signatures of what is overridden or read (``inspect.signature``), and how each is
  reached (a static method, a coroutine, a plain function);
- on a real nats-server, that a reply inbox gets its answer in the read loop, that the
  raw header blocks it sees parse the same with our parser and nats-py's, and that an
  unsubscribe forgets the handler.

The parser's equivalence on tables and random blocks is tested in
tests/services/test_natsclient.py; only real server replies are compared here. When
this file passes on a new nats-py, move the pin in pyproject.toml and ``TESTED`` with it.
"""

from __future__ import annotations

import asyncio
import inspect
import tomllib
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from services.bus import Bus
from services.bus.acks import ReplyInbox
from services.bus.names import DIGESTS
from services.bus.natsclient import Client, header_value, inline_status, parse_headers

TESTED = "2.16"
"""The nats-py minor version this contract was checked against (the pin's lower bound)."""
INSTALLED = version("nats-py")
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_installed_nats_py_is_the_tested_minor_version() -> None:
    assert INSTALLED.split(".")[:2] == TESTED.split("."), (
        f"nats-py {INSTALLED} is installed, but natsclient's private overrides were checked "
        f"against {TESTED}: run this file, and when it passes move TESTED and the pin"
    )
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [pin] = [d for d in deps if d.split(">")[0].split("<")[0].strip() == "nats-py"]
    major, minor = (int(p) for p in TESTED.split("."))
    assert pin.replace(" ", "") == f"nats-py>={TESTED},<{major}.{minor + 1}", (
        f"pyproject.toml allows {pin!r}: pin nats-py to the tested minor version {TESTED}"
    )


class Private(NamedTuple):
    """One private member of nats-py that natsclient uses, and how."""

    owner: type[Any]
    name: str
    signature: str  # parameter names, defaults and markers, without annotations
    kind: str  # "static", "coroutine" or "function": how natsclient calls it
    why: str


PRIVATE = [
    Private(
        NatsClient,
        "_parse_header_lines",
        "(raw)",
        "static",
        "replaced by the faster parser, and called for blocks it does not handle itself",
    ),
    Private(
        NatsClient,
        "_process_headers",
        "(self, headers)",
        "coroutine",
        "mirrored by parse_headers (the raw block of a direct subscription)",
    ),
    Private(
        NatsClient,
        "_process_msg",
        "(self, sid, subject, reply, data, headers)",
        "coroutine",
        "overridden: the read loop's entry point, where direct subscriptions are served",
    ),
    Private(
        NatsClient,
        "_remove_sub",
        "(self, sid, max_msgs=0)",
        "function",
        "overridden, synchronously: forgets a direct subscription's handler",
    ),
    Private(
        Subscription,
        "__init__",
        "(self, conn, id=0, subject='', queue='', cb=None, future=None, max_msgs=0, "
        "pending_msgs_limit=524288, pending_bytes_limit=134217728)",
        "function",
        "its id becomes sub._id, the sid the read loop hands _process_msg",
    ),
]


def shape(fn: Callable[..., object]) -> str:
    """A signature without annotations: what a caller or an override depends on."""
    sig = inspect.signature(fn)
    bare = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=bare, return_annotation=inspect.Signature.empty))


@pytest.mark.parametrize("member", PRIVATE, ids=lambda m: f"{m.owner.__name__}.{m.name}")
def test_private_members_have_the_expected_signatures(member: Private) -> None:
    what = f"{member.owner.__module__}.{member.owner.__name__}.{member.name}"
    raw = inspect.getattr_static(member.owner, member.name, None)
    assert raw is not None, (
        f"nats-py {INSTALLED} has no {what}: natsclient relies on it ({member.why})"
    )
    fn = raw.__func__ if isinstance(raw, staticmethod) else raw
    found = shape(fn)
    assert found == member.signature, (
        f"nats-py {INSTALLED} changed the signature of {what} ({member.why}): "
        f"expected {member.signature}, found {found}"
    )
    kinds = {
        "static": isinstance(raw, staticmethod),
        "coroutine": inspect.iscoroutinefunction(fn),
        "function": inspect.isfunction(fn) and not inspect.iscoroutinefunction(fn),
    }
    found_kind = next((k for k, v in kinds.items() if v), "something else")
    assert kinds[member.kind], (
        f"nats-py {INSTALLED} made {what} a {found_kind}, natsclient expects a "
        f"{member.kind} ({member.why})"
    )


def test_private_attributes_are_where_natsclient_reads_them() -> None:
    assert Subscription(None, id=7)._id == 7, (
        f"nats-py {INSTALLED}: a Subscription's sid is no longer its _id; "
        "Client.subscribe_direct files its handler under sub._id"
    )
    stats = NatsClient().stats
    missing = {"in_msgs", "in_bytes"} - set(stats)
    assert not missing, (
        f"nats-py {INSTALLED}: Client.stats has no {sorted(missing)}; "
        "a direct subscription counts its messages there as _process_msg does"
    )
    # the queued path (every plain subscription, request and JetStream fetch) goes through
    # our parser only because nats-py's _process_headers looks it up on the instance
    source = inspect.getsource(NatsClient._process_headers)
    assert "self._parse_header_lines(" in source, (
        f"nats-py {INSTALLED}: Client._process_headers no longer calls "
        "self._parse_header_lines, so the faster parser is not used for queued messages"
    )


def upstream_headers(raw: bytes | None) -> dict[str, str] | None:
    """What nats-py's own client makes of a header block (its coroutine, run to the end)."""
    coro = NatsClient()._process_headers(raw)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError(f"nats-py {INSTALLED}: its header parser now awaits something")


async def test_a_reply_inbox_gets_its_answers_parsed_as_nats_py_would(bus: Bus) -> None:
    nc = bus.nc
    assert isinstance(nc, Client)
    answers: dict[str, tuple[bytes | None, bytes]] = {}
    arrived: dict[str, asyncio.Event] = {}

    def on_reply(token: str, headers: bytes | None, data: bytes) -> None:
        answers[token] = (headers, data)
        arrived[token].set()

    async def ask(subject: str, payload: bytes) -> tuple[bytes | None, bytes]:
        token, reply = inbox.new()
        arrived[token] = asyncio.Event()
        await nc.publish(subject, payload, reply=reply)
        await asyncio.wait_for(arrived[token].wait(), 5)
        return answers[token]

    inbox = ReplyInbox(nc, on_reply)
    await inbox.start()
    ack = await bus.js.publish("digest.ana", b"item", headers={"K": "v", "Dup": "1"})
    direct_get = f"$JS.API.DIRECT.GET.{DIGESTS}"

    # a stored message: server-written headers after the publisher's, in the read loop
    found, data = await ask(direct_get, f'{{"seq": {ack.seq}}}'.encode())
    assert data == b"item", "the read loop handed the handler something else as payload"
    assert (found or b"").startswith(b"NATS/1.0"), (
        f"nats-py {INSTALLED}: the raw header block is no longer handed to _process_msg"
    )
    assert parse_headers(found) == upstream_headers(found)
    assert (parse_headers(found) or {})["K"] == "v"
    assert header_value(found, b"Nats-Sequence") == str(ack.seq)
    assert inline_status(found) is None

    # an inline status, as a missing message's direct get answers
    missing, _ = await ask(direct_get, b'{"seq": 999}')
    assert parse_headers(missing) == upstream_headers(missing)
    assert inline_status(missing) == "404"

    # the queued way (a plain subscription) gets the same mapping through our parser
    plain = await nc.subscribe("contract.plain")
    await nc.publish("contract.plain", b"x", headers={"A": "1", "B": "two words"})
    assert (await plain.next_msg(5)).headers == {"A": "1", "B": "two words"}

    # an unsubscribe reaches our _remove_sub: the handler is forgotten
    await inbox.close()
    assert not nc._direct, (
        f"nats-py {INSTALLED}: Subscription.unsubscribe no longer calls Client._remove_sub "
        "with its sid, so direct handlers outlive their subscriptions"
    )
