"""Batched key-presence lookups against a real nats-server's KV bucket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from schemas.errors import BusUnavailableError
from services.bus import KV_SENT, Bus, EmbeddedNats, NatsSettings
from services.bus.markers import MAX_BATCH, Entry, KeyLookup


async def test_present_absent_and_deleted_keys_answer_like_a_get(bus: Bus) -> None:
    kv = await bus.kv(KV_SENT)
    await kv.put("sent-one", b"<id@x>")
    await kv.put("sent-empty", b"")
    await kv.put("gone", b"x")
    await kv.delete("gone")
    presence = KeyLookup(bus.nc, KV_SENT)

    got = await asyncio.gather(
        *(presence.present(k) for k in ("sent-one", "sent-empty", "gone", "never"))
    )

    assert got == [True, True, False, False]
    await presence.close()


async def test_lookups_made_together_become_one_request_per_batch(bus: Bus) -> None:
    kv = await bus.kv(KV_SENT)
    sent = {f"job{i}" for i in range(0, 3 * MAX_BATCH, 7)}
    for key in sent:
        await kv.put(key, b"")
    presence = KeyLookup(bus.nc, KV_SENT)
    keys = [f"job{i}" for i in range(3 * MAX_BATCH)]
    before = bus.nc.stats["out_msgs"]

    got = await asyncio.gather(*(presence.present(k) for k in keys))

    assert {k for k, present in zip(keys, got, strict=True) if present} == sent
    assert bus.nc.stats["out_msgs"] - before <= 3 + 1  # 3 batches (+ the reply subscription)
    await presence.close()


async def test_the_same_key_asked_twice_at_once_gets_one_answer_each(bus: Bus) -> None:
    await (await bus.kv(KV_SENT)).put("twice", b"")
    presence = KeyLookup(bus.nc, KV_SENT)

    assert await asyncio.gather(presence.present("twice"), presence.present("twice")) == [
        True,
        True,
    ]
    await presence.close()


async def test_a_bucket_that_cannot_answer_fails_the_lookup_instead_of_guessing(
    nats_factory: Callable[[], EmbeddedNats],
) -> None:
    server = nats_factory()
    bus = await Bus.connect(server.url, NatsSettings(url=server.url))
    try:
        # no topology: the bucket's stream does not exist, the server answers "no responders"
        presence = KeyLookup(bus.nc, "nosuchbucket", timeout_s=0.5)
        with pytest.raises(BusUnavailableError, match="503"):
            await presence.present("job")
        await presence.close()
    finally:
        await bus.close()


async def test_last_gives_value_and_revision_and_the_revision_of_a_delete(bus: Bus) -> None:
    kv = await bus.kv(KV_SENT)
    rev = await kv.put("kept", b"1")
    await kv.put("gone", b"x")
    await kv.delete("gone")
    lookup = KeyLookup(bus.nc, KV_SENT)

    kept, gone, never = await asyncio.gather(
        lookup.last("kept"), lookup.last("gone"), lookup.last("never")
    )

    assert kept == Entry(b"1", rev)
    assert gone is not None
    assert gone.value is None
    assert never is None
    # a compare-and-set after a delete writes on the delete's revision
    assert await kv.update("gone", b"again", last=gone.revision) > gone.revision
    await lookup.close()
