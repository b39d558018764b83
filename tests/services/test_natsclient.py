"""The faster header parser gives exactly what nats-py's own gives, and is the one used."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient

from services.bus import Bus
from services.natsclient import Client

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
