"""Digest benchmark: digests rendered and handed to delivery per second, and peak memory.

The world: ``--initiatives`` initiatives with a pool of events each (half metrics, the rest
milestones, meetings and updates); every recipient follows two initiatives and has
``--items`` digest items waiting, built exactly as the router queues them
(``services.bus.itemstore.digest_item``: the event JSON plus recipient, subscription and
channel). One recipient in ten also has Slack, and gets a second (Block Kit) digest.
Each recipient's items are a random sample of their initiatives' events, so recipients
share entries but rarely a whole section: a harder world for reuse than partners who
follow the same initiative with the same subscriptions.

What is measured:

* **compose** (pure, no I/O), for ``--recipients`` recipients: ``DigestService.compose``
  (parse the items, ``build_digest``, render text + HTML, Block Kit for Slack) plus the
  JSON serialisation of each delivery (what ``run()`` publishes). The items of each
  recipient are made just before its compose, outside the timed part, and dropped after,
  as a service would.
* **run()** on a real nats-server: all items are published to ``DIGESTS`` first
  (pipelined); then ``DigestService.run(recipient, at)`` for every recipient (up to
  ``--run-recipients``, all 10,000 by default: a tick burst as the issue sizes it) from 16
  concurrent runs (as ``run_digest`` does), each reading its items with the batched
  direct get, claiming the period in KV, publishing the deliveries, purging the items and
  marking the period done. The recipients mirror is loaded first
  (``DigestService.recipients.start()``), and its load time is reported too.
* **scale-out**: the same items are published again, and ``--processes`` digest
  processes (spawned, so their caches start cold) share the runs of the next day's
  period, as several ``impactbus run digest`` processes share the tick consumer.
* **raw NATS** (the baseline of run()): the items of ``--raw-recipients`` recipients are
  published again, and the same NATS work per digest is done with bare nats-py, 16 at a
  time: read the items by batched direct get, publish one delivery-sized message and wait
  for its ack, purge. No state, parsing or rendering: what a digest run costs on this
  machine with the stock client library.

Peak RSS is measured per phase (``VmHWM``, reset before each phase where the kernel
allows it). ``--profile`` writes a pyinstrument profile of a slice of the run() phase.

Run: ``.venv/bin/python -m bench.digest [--quick] [--profile FILE.txt]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

import asyncio  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from bench.common import (  # noqa: E402
    SAMPLES,
    Deadline,
    Report,
    bench_links,
    connect_bus,
    load_note,
    nats_server,
    num,
    on_sigterm_exit,
    parser,
    peak_rss_mb,
    quiet_logs,
    reset_peak_rss,
    rss_mb,
    settle,
    spawn,
    stop_process,
)

AT = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)
NEXT_DAY = AT + timedelta(days=1)  # the scale-out phase's period
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Dhaka")
SEED = 20261120


class World:
    """Initiatives, their events (as JSON) and the recipients that follow them."""

    def __init__(self, initiatives: int, events_per_initiative: int) -> None:
        from schemas.events import new_event

        self.rng = random.Random(SEED)
        self.events: dict[str, list[bytes]] = {}
        start = AT - timedelta(days=1)
        kinds = ["metric"] * 10 + ["milestone"] * 4 + ["meeting"] * 2 + ["update"] * 4
        for i in range(initiatives):
            name = f"init-{i:03d}"
            evs = []
            for j in range(events_per_initiative):
                kind = kinds[j % len(kinds)]
                data = dict(SAMPLES[kind])
                if kind == "metric":
                    data["value"] = 30 + (i * 7 + j) % 40
                    data["indicator"] = f"Indicator {j % 12}"
                    topic = f"indicator-{j % 12}"
                else:
                    data["title"] = f"{data['title']} ({name} #{j})"
                    topic = f"{kind}-{j % 6}"
                if kind == "milestone":
                    data["due"] = (AT + timedelta(days=j % 20 - 5)).date().isoformat()
                    data["status"] = ("planned", "reached", "at-risk", "missed")[j % 4]
                event = new_event(
                    kind,
                    name,
                    topic,
                    data,
                    event_id=f"{name}-{j:04d}",
                    time=start + timedelta(minutes=j),
                )
                evs.append(event.model_dump_json().encode())
            self.events[name] = evs
        self.initiatives = list(self.events)

    def recipient(self, r: int) -> Any:
        from schemas.directory import Recipient

        rid = f"reader-{r:05d}"
        # model_construct: a recipient's validation costs ~10 ms today (see the report);
        # this is setup, not what is measured (run() validates what it loads).
        return Recipient.model_construct(
            id=rid,
            name=f"Reader {r}",
            organisation="Healey School" if r % 3 == 0 else None,
            email=f"{rid}@example.org",
            slack_channel=f"C{r:08d}" if r % 10 == 0 else None,
            timezone=ZONES[r % len(ZONES)],
            digest="daily@08:00",
            locale="en",
            webhook_url=None,
            paused_until=None,
            disabled_channels=(),
        )

    def items(self, r: int, count: int) -> list[bytes]:
        """The digest items of recipient ``r``: payloads as the router publishes them."""
        from services.bus.itemstore import digest_item

        rng = random.Random(SEED + r)
        follows = rng.sample(self.initiatives, 2)
        pool = self.events[follows[0]] + self.events[follows[1]]
        rid = f"reader-{r:05d}"
        out = []
        for k, raw in enumerate(rng.sample(pool, count)):
            channel = "slack" if r % 10 == 0 and k % 2 else "email"
            out.append(
                digest_item(raw, {"recipient": rid, "subscription": f"{rid}-s", "channel": channel})
            )
        return out


def stored(payloads: list[bytes], rid: str) -> list[Any]:
    from services.bus.itemstore import StoredMsg

    return [StoredMsg(i + 1, f"digest.{rid}", p) for i, p in enumerate(payloads)]


# --------------------------------------------------------------------------- compose


def compose_phase(world: World, recipients: int, items: int, seconds: float) -> dict[str, float]:
    from services.digest.service import DigestService

    service = DigestService(None, None, None, links=bench_links)  # type: ignore[arg-type]
    # warm-up: template compilation, imports
    for r in range(20):
        service.compose(world.recipient(r), stored(world.items(r, items), "x"), {}, AT, "p")
    # the baseline first, on the same fresh heap as the compose run after it
    render_rate = render_only(world, service, min(400, recipients), items)
    settle()
    reset = reset_peak_rss()
    rss0 = rss_mb()
    busy = 0.0
    digests = deliveries = 0
    handed = 0
    deadline = Deadline(seconds)
    for r in range(recipients):
        if deadline.expired:
            break
        recipient = world.recipient(r)
        msgs = stored(world.items(r, items), recipient.id)
        t0 = time.perf_counter()
        result = service.compose(recipient, msgs, {}, AT, "2026-11-20")
        payloads = [d.__pydantic_serializer__.to_json(d) for d in result.deliveries]
        busy += time.perf_counter() - t0
        digests += 1
        deliveries += len(result.deliveries)
        handed += sum(len(p) for p in payloads)
    peak = peak_rss_mb()
    return {
        "render_rate": render_rate,
        "seconds": busy,
        "digests": digests,
        "deliveries": deliveries,
        "bytes": handed / max(deliveries, 1),
        "peak": peak,
        "rss0": rss0,
        "reset": float(reset),
    }


def render_only(world: World, service: Any, recipients: int, items: int) -> float:
    """Baseline: digests/s of the two Jinja renders alone (text + HTML) of the same views,
    each rendered from scratch (the cache of rendered entries emptied before each)."""
    from services.digest.view import _part, _part_of, render_digest_email

    views = []
    for r in range(recipients):
        recipient = world.recipient(r)
        result = service.compose(recipient, stored(world.items(r, items), "x"), {}, AT, "p")
        links = bench_links(result.deliveries[0])
        views.append((result.view, links.preferences))
    settle()
    t0 = time.perf_counter()
    for view, preferences in views:
        _part.cache_clear()
        _part_of.cache_clear()
        render_digest_email(view, preferences)
    rate = len(views) / (time.perf_counter() - t0)
    _part.cache_clear()
    _part_of.cache_clear()
    return rate


# --------------------------------------------------------------------------- run()


async def publish_items(bus: Any, world: World, recipients: int, items: int) -> float:
    from schemas.subjects import digest_subject

    start = time.perf_counter()
    futures = []
    for r in range(recipients):  # the same items for a recipient each time (seeded)
        subject = digest_subject(f"reader-{r:05d}")
        for payload in world.items(r, items):
            futures.append(await bus.js.publish_async(subject, payload))
        if len(futures) > 20_000:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    return time.perf_counter() - start


async def run_phase(url: str, world: World, args: Any, profile: str | None) -> dict[str, float]:
    from services.bus import DELIVERIES, KV_RECIPIENTS
    from services.digest.service import DigestService

    bus = await connect_bus(url)
    out: dict[str, float] = {}
    out["publish_s"] = await publish_items(bus, world, args.run_recipients, args.items)
    kv = await bus.kv(KV_RECIPIENTS)
    futures = [
        await bus.js.publish_async(
            f"$KV.{KV_RECIPIENTS}.reader-{r:05d}", world.recipient(r).model_dump_json().encode()
        )
        for r in range(args.run_recipients)
    ]
    await asyncio.gather(*futures)
    del kv
    service = await DigestService.open(bus, links=bench_links)
    settle()
    t0 = time.perf_counter()
    await service.recipients.start()  # what start() loads (schedules are not published here)
    out["mirror_s"] = time.perf_counter() - t0
    out["mirror_n"] = len(service.recipients)

    deliveries_before = (await bus.js.stream_info(DELIVERIES)).state.messages
    todo = [f"reader-{r:05d}" for r in range(args.run_recipients)]
    todo.reverse()
    outcomes: dict[str, int] = {}
    sent = 0
    deadline = Deadline(args.run_seconds)

    async def worker() -> None:
        nonlocal sent
        while todo and not deadline.expired:
            result = await service.run(todo.pop(), AT)
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            sent += len(result.deliveries)

    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
    settle()
    reset = reset_peak_rss()
    if profiler:
        profiler.start()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(16)))
    took = time.perf_counter() - t0
    if profiler:
        profiler.stop()
        text = profiler.output_text(unicode=False, color=False)
        await asyncio.to_thread(Path(profile).write_text, text)
    out["peak"] = peak_rss_mb()
    out["reset"] = float(reset)
    out["run_s"] = took
    out["runs"] = sum(outcomes.values())
    out["sent_runs"] = outcomes.get("sent", 0)
    out["deliveries"] = sent
    out["queued"] = (await bus.js.stream_info(DELIVERIES)).state.messages - deliveries_before
    out["other"] = out["runs"] - out["sent_runs"]
    await service.stop()
    await bus.close()
    return out


# --------------------------------------------------------------------------- scale-out


def run_child(url: str, rids: list[str], go: Any, results: Any) -> None:
    """One digest process (spawned): load the mirror, wait for ``go``, run ``rids``."""
    quiet_logs()
    results.put(asyncio.run(_child_runs(url, rids, go)))


async def republish(url: str, world: World, recipients: int, items: int) -> None:
    """Publish the first ``recipients``' items again (a later phase's digests)."""
    bus = await connect_bus(url)
    await publish_items(bus, world, recipients, items)
    await bus.close()


async def _child_runs(url: str, rids: list[str], go: Any) -> tuple[int, float, float]:
    from services.bus import Bus, NatsSettings
    from services.digest.service import DigestService

    bus = await Bus.connect(url, NatsSettings(url=url), name="bench-digest", reconnect=False)
    service = await DigestService.open(bus, links=bench_links)
    await service.recipients.start()
    todo = list(reversed(rids))
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while todo:
            result = await service.run(todo.pop(), NEXT_DAY)
            sent += result.outcome == "sent"

    await asyncio.to_thread(go.wait)
    start = time.monotonic()  # CLOCK_MONOTONIC: comparable between processes
    await asyncio.gather(*(worker() for _ in range(16)))
    end = time.monotonic()
    await service.stop()
    await bus.close()
    return sent, start, end


def scale_out_phase(url: str, first: int, count: int, processes: int) -> dict[str, float]:
    """``processes`` digest processes share ``count`` runs, as they share the tick consumer."""
    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    rids = [f"reader-{r:05d}" for r in range(first, first + count)]
    children = [spawn(run_child, url, rids[i::processes], go, results) for i in range(processes)]
    try:
        settle()
        go.set()
        got = [results.get(timeout=600) for _ in children]
    finally:
        for child in children:
            stop_process(child)
    sent = sum(g[0] for g in got)
    took = max(g[2] for g in got) - min(g[1] for g in got)
    return {"sent": sent, "seconds": took, "rate": sent / took}


# --------------------------------------------------------------------------- raw NATS


async def raw_phase(url: str, first: int, count: int, payload_bytes: int) -> dict[str, float]:
    """The NATS work of a digest with bare nats-py, as a ceiling for run().

    Per recipient, 16 at a time: read its items (batched direct get on a fresh inbox),
    publish one delivery-sized message to JetStream and wait for the ack, purge the items.
    No state, no parsing, no rendering.
    """
    import nats

    from schemas.subjects import digest_subject
    from services.bus import DIGESTS

    nc = await nats.connect(url, name="bench-digest-raw")
    js = nc.jetstream()
    body = b"x" * payload_bytes
    todo = [f"reader-{r:05d}" for r in range(first, first + count)]
    done = 0

    async def one(rid: str) -> None:
        inbox = nc.new_inbox()
        got: list[int] = []
        end: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_msg(msg: Any) -> None:
            if msg.headers and "Status" in msg.headers:
                if not end.done():
                    end.set_result(None)
            else:
                got.append(int(msg.headers["Nats-Sequence"]))

        sub = await nc.subscribe(inbox, cb=on_msg)
        req = {"seq": 1, "next_by_subj": digest_subject(rid), "batch": 1000}
        await nc.publish(f"$JS.API.DIRECT.GET.{DIGESTS}", json.dumps(req).encode(), reply=inbox)
        await asyncio.wait_for(end, 5)
        await sub.unsubscribe()
        await js.publish("deliver.email.digest", body, headers={"Nats-Msg-Id": rid + "-raw"})
        await js.purge_stream(DIGESTS, subject=digest_subject(rid), seq=max(got) + 1)

    async def worker() -> None:
        nonlocal done
        while todo:
            await one(todo.pop())
            done += 1

    settle()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(16)))
    took = time.perf_counter() - start
    await nc.close()
    return {"rate": done / took, "runs": done}


# --------------------------------------------------------------------------- main


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--recipients", type=int, default=10_000)
    p.add_argument("--items", type=int, default=20, help="items per recipient")
    p.add_argument("--initiatives", type=int, default=60)
    p.add_argument("--events", type=int, default=40, help="events per initiative")
    p.add_argument("--compose-seconds", type=float, default=20, help="time bound of compose")
    p.add_argument("--run-recipients", type=int, default=10_000, help="recipients run()")
    p.add_argument("--run-seconds", type=float, default=60, help="time bound of run() phase")
    p.add_argument("--raw-recipients", type=int, default=3000, help="recipients, raw NATS")
    p.add_argument("--processes", type=int, default=2, help="digest processes, scale-out phase")
    p.add_argument("--profile", metavar="FILE", help="pyinstrument text profile of run()")
    args = p.parse_args()
    if args.quick:
        args.recipients, args.run_recipients, args.raw_recipients = 1500, 1500, 500
        args.compose_seconds, args.run_seconds = 5, 6
    args.run_recipients = min(args.run_recipients, args.recipients)
    args.raw_recipients = min(args.raw_recipients, args.run_recipients)
    on_sigterm_exit()
    quiet_logs()

    report = Report("digest")
    world = World(args.initiatives, args.events)
    c = compose_phase(world, args.recipients, args.items, args.compose_seconds)
    with nats_server() as server:
        r = asyncio.run(run_phase(server.url, world, args, args.profile))
        done = int(r["runs"])  # the recipients whose items run() took (and purged)
        asyncio.run(republish(server.url, world, done, args.items))
        x = scale_out_phase(server.url, 0, done, args.processes)
        raw_n = min(args.raw_recipients, done)
        asyncio.run(republish(server.url, world, raw_n, args.items))
        raw = asyncio.run(raw_phase(server.url, 0, raw_n, int(c["bytes"])))

    compose_rate = c["digests"] / c["seconds"]
    run_rate = r["sent_runs"] / r["run_s"] if r["run_s"] else 0.0
    report.add(
        f"compose: digests/s ({c['digests']:,} of {args.recipients:,} recipients x "
        f"{args.items} items)",
        num(compose_rate, "digest/s"),
        baseline=num(c["render_rate"], "digest/s render, no reuse"),
        ratio=compose_rate / c["render_rate"],
        target=">= 1,000/s",
        ok=compose_rate >= 1000,
    )
    report.add(
        "compose: peak RSS",
        num(c["peak"], "MiB"),
        baseline=f"{num(c['rss0'], 'MiB')} at start",
        target="< 300 MiB",
        ok=c["peak"] < 300,
    )
    report.add(
        f"run(): digests/s on NATS ({r['sent_runs']:.0f} runs, 16 at a time)",
        num(run_rate, "digest/s"),
        baseline=num(raw["rate"], "digest/s raw NATS"),
        ratio=run_rate / raw["rate"],
        target=">= 1,000/s",
        ok=run_rate >= 1000,
    )
    report.add(
        f"raw NATS: the same NATS work per digest, bare nats-py ({raw['runs']:.0f} runs)",
        num(raw["rate"], "digest/s"),
        target="(baseline)",
    )
    report.add(
        f"run(): digests/s, {args.processes} digest processes ({x['sent']:.0f} runs)",
        num(x["rate"], "digest/s"),
        baseline=num(run_rate, "digest/s one process"),
        ratio=x["rate"] / run_rate if run_rate else 0.0,
        target=">= 1,000/s",
        ok=x["rate"] >= 1000,
    )
    report.add(
        "run(): peak RSS",
        num(r["peak"], "MiB"),
        target="< 300 MiB",
        ok=r["peak"] < 300,
    )
    report.add(
        f"run(): recipients mirror load ({r['mirror_n']:.0f} recipients)",
        num(r["mirror_s"], "s", 2),
        baseline=num(r["mirror_n"] / r["mirror_s"], "recipient/s"),
        target="(info)",
    )
    report.add(
        f"setup: {args.run_recipients * args.items:,} items published to DIGESTS, pipelined",
        num(args.run_recipients * args.items / r["publish_s"], "msg/s"),
        target="(setup)",
    )
    report.note(
        f"compose: {c['deliveries']:,} deliveries for {c['digests']:,} digests (Slack too for "
        f"1 in 10), {c['bytes'] / 1024:.1f} KiB of delivery JSON each; only compose and "
        "the delivery's JSON serialisation are timed; the render baseline renders the text and "
        "HTML templates of the same views from scratch (no entry reused) and nothing else. "
        f"run(): {r['runs']:.0f} runs ({r['other']:.0f} not 'sent') "
        f"in {r['run_s']:.1f} s, {r['deliveries']:.0f} deliveries returned, {r['queued']:.0f} "
        "new messages in DELIVERIES."
        + ("" if c["reset"] and r["reset"] else " (peak RSS could not be reset between phases)")
    )
    report.note(load_note())
    report.print("digest: compose (pure) and run() on NATS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
