"""Ingest benchmark: HTTP API events/s next to the raw JetStream publish limit.

Starts its own nats-server (embedded, free port, temp store) and the API in a child
process (``--serve``), so the load generator does not share the API's interpreter; then

* raw:    nats-py ``publish_async`` pipelined, the ceiling for anything on top;
* single: ``POST /v1/events`` from ``--connections`` keep-alive clients;
* batch:  ``POST /v1/events:batch`` of ``--batch`` events from a few clients;

and prints events/s with the ratio to raw. The load generator is a minimal HTTP/1.1
client on asyncio streams (httpx would measure itself more than the API). Rate limiting
is off in the benchmarked API (``IMPACTBUS_API_RATE_PER_S=0``).

Run: ``.venv/bin/python -m bench.ingest`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Report, num
from schemas.events import new_event
from services.bus import EVENTS, Bus, EmbeddedNats, NatsSettings, free_port
from services.directory.auth import create_token

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = {
    "indicator": "Children at a healthy weight",
    "value": 71.5,
    "unit": "%",
    "period": "2026-09",
    "baseline": 64.0,
    "target": 75.0,
}


def short_event(i: int) -> dict[str, object]:
    return {
        "kind": "metric",
        "initiative": "somerville",
        "topic": f"bmi-{i % 50}",
        "data": {**SAMPLE, "value": float(i)},
    }


# ------------------------------------------------------------------ raw JetStream


async def raw_publish(bus: Bus, n: int) -> float:
    payloads = [
        new_event("metric", "somerville", f"raw-{i % 50}", {**SAMPLE, "value": float(i)})
        for i in range(n)
    ]
    start = time.perf_counter()
    futures = []
    for e in payloads:
        futures.append(
            await bus.js.publish_async(
                e.nats_subject,
                e.model_dump_json().encode(),
                headers={"Nats-Msg-Id": e.key, "Nats-Expected-Stream": EVENTS},
            )
        )
    await asyncio.gather(*futures)
    return time.perf_counter() - start


# ------------------------------------------------------------------ HTTP load


def request(path: str, token: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


async def http_load(port: int, requests: list[bytes], connections: int) -> tuple[float, int]:
    queue = list(reversed(requests))
    errors = 0

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                writer.write(queue.pop())
                status, _ = await read_response(reader)
                if status not in (202, 207):
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    return time.perf_counter() - start, errors


# ------------------------------------------------------------------ one round


def labels(args: argparse.Namespace) -> dict[str, str]:
    return {
        "raw": "raw JetStream publish_async (pipelined)",
        "single": f"POST /v1/events x{args.connections} connections",
        "batch": f"POST /v1/events:batch of {args.batch} x{args.batch_connections}",
    }


async def one_round(bus: Bus, port: int, token: str, args: argparse.Namespace) -> dict[str, float]:
    """events/s of each path, measured back to back."""
    rates = {"raw": args.raw / await raw_publish(bus, args.raw)}
    single = [
        request("/v1/events", token, json.dumps(short_event(i)).encode())
        for i in range(args.single)
    ]
    took, errors = await http_load(port, single, args.connections)
    assert errors == 0, f"{errors} single POSTs failed"
    rates["single"] = args.single / took
    batches = [
        request(
            "/v1/events:batch",
            token,
            json.dumps([short_event(b * args.batch + i) for i in range(args.batch)]).encode(),
        )
        for b in range(args.batches)
    ]
    took, errors = await http_load(port, batches, args.batch_connections)
    assert errors == 0, f"{errors} batches failed"
    rates["batch"] = args.batch * args.batches / took
    return rates


# ------------------------------------------------------------------ the API child


async def serve(nats_url: str, port: int) -> None:
    from services.api import ApiSettings, run_api
    from services.config import HubSettings, Runtime

    bus = await Bus.connect(nats_url, NatsSettings(url=nats_url))
    rt = Runtime(bus, HubSettings(http_host="127.0.0.1", http_port=port), asyncio.Event())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, rt.stop.set)
    await run_api(rt, settings=ApiSettings(rate_per_s=0))
    await bus.close()


async def wait_http(port: int, limit_s: float = 20) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError("the API did not start")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="impactbus-bench-") as tmp:
        server = EmbeddedNats(store_dir=Path(tmp), port=free_port()).start()
        child = None
        try:
            bus = await Bus.connect(server.url, NatsSettings(url=server.url))
            await bus.ensure_topology()
            _, token = await create_token(bus, "admin", [])
            port = free_port()
            path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
            cmd = [
                sys.executable,
                "-m",
                "bench.ingest",
                "--serve",
                server.url,
                str(port),
                "--loop",
                args.loop,
            ]
            if args.profile:
                cmd = [
                    sys.executable,
                    "-m",
                    "pyinstrument",
                    "-o",
                    args.profile,
                    "-r",
                    "text",
                    "-m",
                    "bench.ingest",
                    "--serve",
                    server.url,
                    str(port),
                    "--loop",
                    args.loop,
                ]
            child = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=ROOT)
            await wait_http(port)

            warm = [
                request("/v1/events", token, json.dumps(short_event(i)).encode())
                for i in range(200)
            ]
            await http_load(port, warm, args.connections)  # lazy imports, first connections
            expected = 200
            rates: dict[str, list[float]] = {}
            ratios: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for name, rate in (await one_round(bus, port, token, args)).items():
                    rates.setdefault(name, []).append(rate)
                    ratios.setdefault(name, []).append(rate / rates["raw"][-1])
                expected += args.raw + args.single + args.batch * args.batches
            stored = (await bus.js.stream_info(EVENTS)).state.messages
            print(
                f"\nEVENTS holds {stored} messages (expected {expected}); "
                f"medians of {args.rounds} rounds, API loop: {args.loop}"
            )
            print(f"\n{'path':<48}{'events/s':>11}{'of raw':>8}   per round")
            for name, label in labels(args).items():
                per = " ".join(f"{r:,.0f}" for r in rates[name])
                print(
                    f"{label:<48}{median(rates[name]):>11,.0f}{median(ratios[name]):>8.2f}   {per}"
                )
            report = Report("ingest")
            raw = median(rates["raw"])
            report.add(labels(args)["raw"], num(raw, "events/s"))
            for name, target in (("single", 1_500), ("batch", 15_000)):
                rate = median(rates[name])
                report.add(
                    labels(args)[name],
                    num(rate, "events/s"),
                    baseline=f"raw {num(raw, '/s')}",
                    ratio=median(ratios[name]),
                    target=f">= {target:,}/s",
                    ok=rate >= target,
                )
            report.print("Ingest (medians of the rounds)")
            await bus.close()
        finally:
            if child is not None:
                child.send_signal(signal.SIGTERM)
                await asyncio.wait_for(child.wait(), 30)
            server.stop()


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", nargs=2, metavar=("NATS_URL", "PORT"), help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=3, help="report the median of N rounds")
    p.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the API child's event loop",
    )
    p.add_argument("--raw", type=int, default=30_000, help="raw publishes per round")
    p.add_argument("--single", type=int, default=6_000, help="single POSTs per round")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--batch", type=int, default=1000, help="events per batch")
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--batch-connections", type=int, default=4)
    p.add_argument(
        "--profile", metavar="HTML", help="profile the API child with pyinstrument (text report)"
    )
    return p.parse_args()


if __name__ == "__main__":
    args = parse()
    if args.serve:
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(serve(args.serve[0], int(args.serve[1])))
        else:
            asyncio.run(serve(args.serve[0], int(args.serve[1])))
    else:
        asyncio.run(main(args))
