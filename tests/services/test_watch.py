"""KV mirrors and snapshots on a real nats-server: the initial load is never cut short."""

from __future__ import annotations

from services.bus import KV_SUBSCRIPTIONS, Bus
from services.bus.kv import open_kv
from services.bus.watch import KvMirror, snapshot

KEYS = 300
ROUNDS = 30


async def _fill(bus: Bus) -> None:
    kv = await open_kv(bus, KV_SUBSCRIPTIONS)
    for i in range(KEYS):
        await kv.put(f"k{i:04d}", f"value {i}".encode())
    await kv.delete("k0000")


async def test_a_snapshot_read_right_after_writes_has_every_key(bus: Bus) -> None:
    await _fill(bus)
    kv = await open_kv(bus, KV_SUBSCRIPTIONS)

    # the values travel behind the consumer-info reply now and then; read many times so a
    # load that ends early (nats-py's watcher did) shows up as a short read
    sizes = {len(await snapshot(kv)) for _ in range(ROUNDS)}

    assert sizes == {KEYS - 1}
    got = await snapshot(kv)
    assert got["k0299"] == b"value 299"
    assert "k0000" not in got


async def test_a_mirror_is_ready_only_with_every_key_loaded(bus: Bus) -> None:
    await _fill(bus)
    kv = await open_kv(bus, KV_SUBSCRIPTIONS)

    sizes = set()
    for _ in range(ROUNDS):
        mirror: KvMirror[str] = KvMirror(kv, bytes.decode)
        await mirror.start()
        sizes.add(len(mirror))
        await mirror.stop()

    assert sizes == {KEYS - 1}


async def test_an_empty_bucket_snapshots_empty(bus: Bus) -> None:
    assert await snapshot(await open_kv(bus, KV_SUBSCRIPTIONS)) == {}
