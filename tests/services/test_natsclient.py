"""The faster header parser gives exactly what nats-py's own gives, and is the one used."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient

from services.bus import Bus
from services.bus.natsclient import Client, header_value, inline_status, parse_headers

UPSTREAM = NatsClient._parse_header_lines
OURS = Client._parse_header_lines

TABLE = [
    b"Nats-Stream: DIGESTS\r\nNats-Subject: digest.ana\r\nNats-Sequence: 12\r\n\r\n",
    b"Name:Value\r\nTabbed:\tvalue \r\n",
    b"Bad Name: skipped\r\nGood: kept\r\n",
    b" Lead: space stripped\r\nTrail : too\r\n",
    b"Colon: a:b:c\r\nEmpty:\r\n:no name\r\nnocolon\r\n\r\n\r\n",
    b"Sep\x1cName: skipped\r\n\x1cLead: skipped\r\nV: \x1cvalue kept\x1c\r\n",
    b"Ctrl\x01Name: kept as upstream\r\n",
    "Caf\u00e9: non-ascii name\r\nOk: v\r\n".encode(),
    "Value: caf\u00e9 \u2603\r\n".encode(),
    b"Broken: \xff\xfe\r\n",
    b"Dup: 1\r\nDup: 2\r\n",
    b"",
]


@pytest.mark.parametrize("raw", TABLE)
def test_same_as_nats_py_on_the_table(raw: bytes) -> None:
    assert OURS(raw) == UPSTREAM(raw)


@given(
    st.lists(
        st.tuples(
            st.text(st.characters(max_codepoint=0x2FF), max_size=12),
            st.sampled_from([":", ": ", ":\t", " : ", ""]),
            st.text(st.characters(max_codepoint=0x2FF, exclude_characters="\r\n"), max_size=20),
        ),
        max_size=8,
    ),
    st.sampled_from(["utf-8", "latin-1"]),
)
def test_same_as_nats_py_on_random_blocks(lines: list[tuple[str, str, str]], enc: str) -> None:
    raw = b"".join(
        f"{n}{sep}{v}\r\n".encode(enc, "replace") for n, sep, v in lines if "\r\n" not in n
    )
    assert OURS(raw) == UPSTREAM(raw)


async def test_the_bus_connection_uses_it(bus: Bus) -> None:
    assert isinstance(bus.nc, Client)
    kv = await bus.kv("sent")
    await kv.put("k", b"v")
    entry = await kv.get("k")  # a direct get: the reply's headers went through our parser
    assert (entry.value, entry.revision) == (b"v", 1)


def upstream_headers(raw: bytes) -> dict[str, str] | None:
    """What nats-py's client makes of a header block (its coroutine, run to the end)."""
    coro = NatsClient()._process_headers(raw)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("nats-py's header parser awaited something")


STATUS_TABLE = [
    b"NATS/1.0\r\nNats-Stream: DIGESTS\r\nNats-Sequence: 3\r\n\r\n",
    b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 0\r\nNats-Last-Sequence: 0\r\n\r\n",
    b"NATS/1.0 404 No Messages\r\n\r\n",
    b"NATS/1.0 503\r\n\r\n",
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1016\r\nNats-Last-Stream: 1024\r\n\r\n",
    b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\n\r\n",
    b"NATS/1.0 abc\r\n\r\n",
    b"NATS/1.0\r\n\r\n",
    b"NATS/1.0\r\nEmpty: \r\nSpaced:  v \r\n\r\n",
    b"NATS/1.0\r\nKV-Operation: DEL\r\nNats-Marker-Reason: MaxAge\r\n\r\n",
]


@pytest.mark.parametrize("raw", STATUS_TABLE)
def test_message_headers_same_as_nats_py(raw: bytes) -> None:
    assert parse_headers(raw) == upstream_headers(raw)


@given(
    st.sampled_from(["", " 204 EOB", " 404 No Messages", " 503", " 100 Idle Heartbeat", " 40"]),
    st.lists(
        st.tuples(
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10),
            st.sampled_from([": ", ":", " : "]),
            st.text(st.characters(min_codepoint=0x9, max_codepoint=0x7E), max_size=12),
        ),
        max_size=6,
    ),
)
def test_message_headers_same_as_nats_py_on_random_blocks(
    status: str, lines: list[tuple[str, str, str]]
) -> None:
    body = "".join(f"{n}{s}{v}\r\n" for n, s, v in lines if "\r" not in n + v and "\n" not in v)
    raw = f"NATS/1.0{status}\r\n{body}\r\n".encode()
    assert parse_headers(raw) == upstream_headers(raw)


@pytest.mark.parametrize("raw", STATUS_TABLE)
def test_inline_status_is_the_status_line(raw: bytes) -> None:
    assert inline_status(raw) == (upstream_headers(raw) or {}).get("Status")


def test_a_header_named_status_is_no_status() -> None:
    raw = b"NATS/1.0\r\nStatus: 404\r\n\r\n"  # a stored message's own header
    assert (upstream_headers(raw) or {}).get("Status") == "404"  # nats-py is fooled
    assert inline_status(raw) is None


NAMES = [b"Nats-Sequence", b"Nats-Subject", b"K"]


@pytest.mark.parametrize("raw", [*STATUS_TABLE, b"NATS/1.0\r\nK: 1\r\n K : 2\r\n\r\n"])
@pytest.mark.parametrize("name", NAMES)
def test_header_value_is_the_mappings(raw: bytes, name: bytes) -> None:
    assert header_value(raw, name) == (upstream_headers(raw) or {}).get(name.decode())


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Nats-Sequence", "Nats-Subject", " Nats-Sequence", "K", "Other"]),
            st.sampled_from([": ", ":", " : ", ":  "]),
            st.text(st.characters(min_codepoint=0x9, max_codepoint=0x17F), max_size=8),
        ),
        max_size=6,
    ),
    st.sampled_from(NAMES),
)
def test_header_value_is_the_mappings_on_random_blocks(
    lines: list[tuple[str, str, str]], name: bytes
) -> None:
    body = "".join(f"{n}{s}{v}\r\n" for n, s, v in lines if "\r" not in v and "\n" not in v)
    raw = f"NATS/1.0\r\n{body}\r\n".encode()
    assert header_value(raw, name) == (upstream_headers(raw) or {}).get(name.decode())


def test_no_header_block_is_no_headers() -> None:
    assert parse_headers(None) is None
    assert parse_headers(b"") is None


async def test_a_direct_subscription_gets_each_message_in_the_read_loop(bus: Bus) -> None:
    nc = bus.nc
    assert isinstance(nc, Client)
    got: list[tuple[bytes, bytes | None, bytes]] = []
    done = asyncio.Event()

    def handler(subject: bytes, headers: bytes | None, data: bytes) -> None:
        got.append((subject, headers, data))
        if data == b"last":
            done.set()

    sub = await nc.subscribe_direct("direct.test", handler)
    await nc.publish("direct.test", b"one")
    await nc.publish("direct.test", b"two", headers={"K": "v"})
    await nc.publish("direct.test", b"last")
    await asyncio.wait_for(done.wait(), 5)
    assert got[:2] == [(b"direct.test", None, b"one"), (b"direct.test", got[1][1], b"two")]
    assert parse_headers(got[1][1]) == {"K": "v"}
    assert sub._pending_queue.empty()  # nothing went the queued way too

    await sub.unsubscribe()
    assert not nc._direct  # forgotten with the subscription
    # a later message to the subject is not handled: a plain subscriber's receipt shows
    # it went out after the unsubscribe
    witness = await nc.subscribe("direct.test")
    await nc.publish("direct.test", b"after")
    assert (await witness.next_msg(5)).data == b"after"
    assert len(got) == 3


async def test_a_failing_handler_is_logged_and_the_connection_goes_on(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    nc = bus.nc
    assert isinstance(nc, Client)
    seen: list[bytes] = []
    after = asyncio.Event()

    def handler(subject: bytes, headers: bytes | None, data: bytes) -> None:
        seen.append(data)
        if data == b"boom":
            raise ValueError("handler bug")
        after.set()

    await nc.subscribe_direct("direct.fail", handler)
    for data in (b"boom", b"after"):
        await nc.publish("direct.fail", data)
    await asyncio.wait_for(after.wait(), 5)
    assert seen == [b"boom", b"after"]
    assert nc.is_connected
    assert "handler failed" in caplog.text
    assert "handler bug" in caplog.text
