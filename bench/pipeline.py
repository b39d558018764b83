"""Pipeline throughput and latency: events -> router -> delivery workers -> outbox sink.

Measured in one run, on one nats-server started here:

* raw: JetStream end to end with nats-py (publish pipelined -> durable pull(100) -> ack),
  the baseline the hub is compared with;
* same NATS work: what one delivery costs NATS in the hub, done by a bare nats-py loop
  with no rendering, validation or logic (job publish, fetch, one batched marker lookup
  per fetch, outbox record publish, marker put, ack, log record): the ceiling for any
  hub that keeps the delivery guarantees (none lost, at most one duplicate per crash);
* hub: N events, each fanned out to 10 email recipients, through the real router and
  email delivery worker (dev outbox as the sink: each delivery is rendered as the email it
  would be and stored in the OUTBOX stream) — once with router and worker in one process
  (``impactbus up``) and once as two processes (``impactbus run router`` + ``run email``);
* latency: p50/p99 from "event acknowledged by JetStream" to "delivery sent" at 1,000
  deliveries/s.

Usage: python bench/pipeline.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nats.js import api

from schemas.events import new_event
from services.bus import OUTBOX, Bus, EmbeddedNats, NatsSettings, free_port
from services.directory.records import Directory

FANOUT = 10
PAYLOAD = b'{"x": "' + b"y" * 280 + b'"}'
JOB_BYTES = b'{"x": "' + b"y" * 1200 + b'"}'  # a delivery job: the event JSON and its target


async def raw_baseline(bus: Bus, n: int) -> float:
    """JetStream publish (pipelined) -> durable pull(100) -> ack, msgs/s."""
    await bus.js.add_stream(name="RAW", subjects=["raw.>"], storage=api.StorageType.FILE)
    await bus.js.add_consumer(
        "RAW", api.ConsumerConfig(durable_name="raw", ack_policy=api.AckPolicy.EXPLICIT)
    )
    sub = await bus.js.pull_subscribe_bind(durable="raw", stream="RAW")
    done = asyncio.Event()
    acked = 0

    async def consume() -> None:
        nonlocal acked
        while acked < n:
            try:
                msgs = await sub.fetch(100, timeout=1)
            except TimeoutError:
                continue  # nothing yet
            for m in msgs:
                await m.ack()
            acked += len(msgs)
        done.set()

    start = time.perf_counter()
    task = asyncio.create_task(consume())
    futures = [await bus.js.publish_async(f"raw.{i % 10}", PAYLOAD) for i in range(n)]
    await asyncio.gather(*futures)
    await done.wait()
    elapsed = time.perf_counter() - start
    await task
    await sub.unsubscribe()
    await bus.js.delete_stream("RAW")
    return n / elapsed


async def same_nats_work(bus: Bus, n: int, outbox_bytes: int) -> float:
    """Deliveries/s of a bare loop doing the hub's NATS operations per delivery."""
    from services.bus.acks import publisher
    from services.bus.markers import KeyLookup

    await bus.js.add_stream(
        name="RAWJOBS",
        subjects=["rawjobs.>"],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
    )
    await bus.js.add_stream(name="RAWOUT", subjects=["rawout.>"], storage=api.StorageType.FILE)
    await bus.js.create_key_value(bucket="rawsent", direct=True)
    await bus.js.add_consumer(
        "RAWJOBS", api.ConsumerConfig(durable_name="w", ack_policy=api.AckPolicy.EXPLICIT)
    )
    sub = await bus.js.pull_subscribe_bind(durable="w", stream="RAWJOBS")
    presence = KeyLookup(bus.nc, "rawsent")
    publish = publisher(bus.nc, 10)  # the hub's fastest acknowledged publish
    job = JOB_BYTES
    record = b"x" * outbox_bytes
    done = 0

    async def deliver(m: Any, i: int) -> None:
        key = f"j{i}"
        if await presence.present(key):
            return
        await publish("rawout.email", record, {"Nats-Msg-Id": key})
        await publish(f"$KV.rawsent.{key}", b"<id>", {})
        await m.ack()
        await bus.nc.publish("rawlog.x", b'{"status":"sent"}')

    async def consume() -> None:
        nonlocal done
        while done < n:
            try:
                msgs = await sub.fetch(128, timeout=1)
            except TimeoutError:
                continue
            await asyncio.gather(*(deliver(m, done + k) for k, m in enumerate(msgs)))
            done += len(msgs)

    start = time.perf_counter()
    task = asyncio.create_task(consume())
    futures = [await bus.js.publish_async(f"rawjobs.{i % 10}", job) for i in range(n)]
    await asyncio.gather(*futures)
    await task
    elapsed = time.perf_counter() - start
    await sub.unsubscribe()
    await presence.close()
    await bus.js.delete_stream("RAWJOBS")
    await bus.js.delete_stream("RAWOUT")
    await bus.js.delete_key_value("rawsent")
    return n / elapsed


async def setup_directory(bus: Bus) -> None:
    d = await Directory.open(bus)
    for i in range(FANOUT):
        await d.add_recipient(id=f"p{i}", email=f"partner{i}@example.org", name=f"Partner {i}")
        await d.subscribe(f"p{i}", "impact.bench.>", "email")


def events(n: int, tag: str) -> list[bytes]:
    out = []
    for i in range(n):
        e = new_event(
            "metric",
            "bench",
            f"t{i % 20}",
            {
                "indicator": "Minutes of daily physical activity",
                "value": float(i),
                "unit": "min",
                "baseline": 20.0,
                "target": 60.0,
            },
            event_id=f"{tag}-{i}",
            source="urn:bench",
        )
        out.append(e.model_dump_json().encode())
    return out


async def outbox_seq(bus: Bus) -> int:
    return int((await bus.js.stream_info(OUTBOX)).state.last_seq)


async def publish_all(bus: Bus, payloads: list[bytes]) -> dict[str, float]:
    """Publish pipelined; returns event id -> ack time (epoch seconds)."""
    acked: dict[str, float] = {}
    futures = []
    for p in payloads:
        ev = json.loads(p)
        subject = f"impact.bench.metric.{ev['subject']}"
        fut = await bus.js.publish_async(subject, p, headers={"Nats-Msg-Id": ev["id"]})
        fut.add_done_callback(lambda _f, eid=ev["id"]: acked.__setitem__(eid, time.time()))
        futures.append(fut)
    await asyncio.gather(*futures)
    return acked


async def wait_outbox(bus: Bus, target: int, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while await outbox_seq(bus) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"outbox at {await outbox_seq(bus)}/{target}")
        await asyncio.sleep(0.01)


def start_service(env: dict[str, str], services: list[str]) -> subprocess.Popen[bytes]:
    """``impactbus run <services...>`` as one process."""
    impactbus = str(Path(sys.executable).parent / "impactbus")
    return subprocess.Popen(
        [impactbus, "run", *services], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def run_hub(bus: Bus, url: str, n: int, tag: str, layout: list[list[str]]) -> float:
    """Deliveries/s for n events x FANOUT with the services laid out in processes."""
    env = {
        **os.environ,
        "IMPACTBUS_NATS_URL": url,
        "IMPACTBUS_LOG_LEVEL": "WARNING",
        "IMPACTBUS_HEALTH_PORT": "0",
    }
    env.pop("IMPACTBUS_SMTP_HOST", None)
    procs = [start_service(env, group) for group in layout]
    try:
        # warm-up: one event end to end (processes started, consumers bound, caches warm)
        base = await outbox_seq(bus)
        await publish_all(bus, events(1, f"{tag}-warm"))
        await wait_outbox(bus, base + FANOUT, 60)
        base = await outbox_seq(bus)
        payloads = events(n, tag)
        start = time.perf_counter()
        await publish_all(bus, payloads)
        await wait_outbox(bus, base + n * FANOUT, 300)
        return n * FANOUT / (time.perf_counter() - start)
    finally:
        stop(procs)


async def latency(bus: Bus, url: str, seconds: float) -> tuple[float, float, int]:
    """p50/p99 ms from JetStream ack to delivery at 100 events/s x 10 = 1,000 deliveries/s."""
    env = {
        **os.environ,
        "IMPACTBUS_NATS_URL": url,
        "IMPACTBUS_LOG_LEVEL": "WARNING",
        "IMPACTBUS_HEALTH_PORT": "0",
    }
    proc = start_service(env, ["router", "email"])
    try:
        base = await outbox_seq(bus)
        await publish_all(bus, events(1, "lat-warm"))
        await wait_outbox(bus, base + FANOUT, 60)
        base = await outbox_seq(bus)
        n = int(seconds * 100)
        payloads = events(n, "lat")
        acked: dict[str, float] = {}
        t0 = time.perf_counter()
        for i in range(0, n, 10):  # 10 events every 100 ms
            acked.update(await publish_all(bus, payloads[i : i + 10]))
            await asyncio.sleep(max(0, t0 + (i + 10) / 100 - time.perf_counter()))
        await wait_outbox(bus, base + n * FANOUT, 60)
        lat = []
        for seq in range(base + 1, base + n * FANOUT + 1):
            entry = json.loads((await bus.js.get_msg(OUTBOX, seq)).data)
            sent = datetime.fromisoformat(entry["sent_at"]).timestamp()
            lat.append((sent - acked[entry["event_id"]]) * 1000)
        lat.sort()
        return statistics.median(lat), lat[int(len(lat) * 0.99) - 1], len(lat)
    finally:
        stop([proc])


async def main(quick: bool) -> None:
    n_raw = 20_000 if quick else 100_000
    n_events = 300 if quick else 2_000
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(store_dir=Path(tmp) / "nats", port=free_port()).start()
        try:
            bus = await Bus.connect(server.url, NatsSettings(url=server.url))
            await bus.ensure_topology()
            # OUTBOX keeps the last 10,000 entries; the bench counts by sequence.
            raw = await raw_baseline(bus, n_raw)
            await setup_directory(bus)
            one = await run_hub(bus, server.url, n_events, "one", [["router", "email"]])
            two = await run_hub(bus, server.url, n_events, "two", [["router"], ["email"]])
            p50, p99, count = await latency(bus, server.url, 3 if quick else 5)
            last = await bus.js.get_msg(OUTBOX, await outbox_seq(bus))
            same = await same_nats_work(bus, n_events * FANOUT, len(last.data or b""))
            await bus.close()
        finally:
            server.stop()
    rows = [
        (
            "raw JetStream e2e (publish -> pull(100) -> ack)",
            f"{raw:,.0f} msg/s",
            "-",
            "-",
            "baseline",
            "-",
        ),
        (
            "hub pipeline, 1 process (router+email), fan-out 10",
            f"{one:,.0f} deliveries/s",
            f"{raw:,.0f}",
            f"{one / raw:.2f}",
            "≥ 0.5",
            _ok(one / raw >= 0.5),
        ),
        (
            "hub pipeline, 2 processes (router | email), fan-out 10",
            f"{two:,.0f} deliveries/s",
            f"{raw:,.0f}",
            f"{two / raw:.2f}",
            "≥ 0.5",
            _ok(two / raw >= 0.5),
        ),
        (
            "same NATS work per delivery, bare nats-py loop (the ceiling)",
            f"{same:,.0f} deliveries/s",
            f"{raw:,.0f}",
            f"{same / raw:.2f}",
            "-",
            "-",
        ),
        (
            "hub, best layout, against that ceiling",
            f"{max(one, two):,.0f} deliveries/s",
            f"{same:,.0f}",
            f"{max(one, two) / same:.2f}",
            "-",
            "-",
        ),
        (
            f"latency event->sent at 1,000 deliveries/s, p50 ({count})",
            f"{p50:.1f} ms",
            "-",
            "-",
            "-",
            "-",
        ),
        (
            "latency event->sent at 1,000 deliveries/s, p99",
            f"{p99:.1f} ms",
            "-",
            "-",
            "< 250 ms",
            _ok(p99 < 250),
        ),
    ]
    print("| metric | figure | baseline | ratio | target | ok |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def _ok(ok: bool) -> str:
    return "yes" if ok else "NO"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.quick))
