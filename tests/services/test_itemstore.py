"""Reading a subject's messages with batched direct gets, on a real nats-server."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from services.bus import DIGESTS, Bus
from services.bus.itemstore import read_subject


async def _publish(bus: Bus, subject: str, n: int) -> list[int]:
    return [(await bus.js.publish(subject, f"{subject}#{i}".encode())).seq for i in range(n)]


async def test_reads_every_message_of_one_subject_across_batches(bus: Bus) -> None:
    mine = await _publish(bus, "digest.ana", 25)
    await _publish(bus, "digest.ben", 5)

    got = await read_subject(bus, DIGESTS, "digest.ana", batch=10)

    assert [m.seq for m in got] == mine
    assert [m.data for m in got] == [f"digest.ana#{i}".encode() for i in range(25)]
    assert {m.subject for m in got} == {"digest.ana"}


async def test_up_to_seq_leaves_later_messages_for_the_next_read(bus: Bus) -> None:
    seqs = await _publish(bus, "digest.ana", 12)

    got = await read_subject(bus, DIGESTS, "digest.ana", up_to_seq=seqs[6], batch=5)

    assert [m.seq for m in got] == seqs[:7]


async def test_nothing_waiting_reads_as_empty(bus: Bus) -> None:
    assert await read_subject(bus, DIGESTS, "digest.nobody") == []


async def test_concurrent_reads_each_get_their_own_messages(bus: Bus) -> None:
    names = [f"digest.r{i}" for i in range(20)]
    for i, name in enumerate(names):
        await _publish(bus, name, i % 4 + 1)

    results = await asyncio.gather(*(read_subject(bus, DIGESTS, n) for n in names))

    for i, (name, got) in enumerate(zip(names, results, strict=True)):
        assert [m.data for m in got] == [f"{name}#{k}".encode() for k in range(i % 4 + 1)]


async def test_a_stream_that_cannot_answer_is_an_error_not_an_empty_read(bus: Bus) -> None:
    with pytest.raises(nats.errors.Error, match="503"):
        await read_subject(bus, "NOSUCHSTREAM", "digest.ana", wait_s=2)


async def test_a_wildcard_read_gives_each_message_its_own_subject(bus: Bus) -> None:
    ana = await _publish(bus, "digest.ana", 2)
    ben = await _publish(bus, "digest.ben", 2)

    got = await read_subject(bus, DIGESTS, "digest.*")

    assert [(m.seq, m.subject) for m in got] == sorted(
        [(s, "digest.ana") for s in ana] + [(s, "digest.ben") for s in ben]
    )


async def test_after_seq_skips_what_an_earlier_read_took(bus: Bus) -> None:
    seqs = await _publish(bus, "digest.ana", 6)

    got = await read_subject(bus, DIGESTS, "digest.ana", after_seq=seqs[3])

    assert [m.seq for m in got] == seqs[4:]
