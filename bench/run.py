"""Run every benchmark (``bench/*.py``), each in its own process, and print one table.

``make bench`` calls this. Each script runs as ``python -m bench.<name>`` from the
repository root, with ``--quick`` passed on (``run.py --quick``) to the scripts that
accept it, under a time limit (``--timeout``, per script); a script over its limit gets
SIGTERM to its process group (then SIGKILL), so the servers it started are stopped by
its own clean-up.

Rows reach the combined table in one of two ways: scripts built on ``bench.common``
append them to the file named by ``IMPACTBUS_BENCH_ROWS``; any other script's markdown
tables are read from its output (first column the metric, then columns matched by their
header names: ``figure``, ``baseline``, ``ratio``, ``target``, ``ok``). A script that
gives neither gets one row with its exit status. Exit status: 1 if a script failed or
timed out (or, with ``--strict``, missed a target), else 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from bench.common import HEADER, ROWS_ENV, Row, print_table  # noqa: E402

NOT_BENCHMARKS = {"__init__", "common", "run"}
# Ours first, in the order of the issues; others' scripts after, alphabetically.
ORDER = ["email", "slack", "matching", "digest", "ingest", "pipeline"]


def scripts(only: list[str] | None) -> list[Path]:
    found = [p for p in _HERE.glob("*.py") if p.stem not in NOT_BENCHMARKS]
    found.sort(key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))
    if only:
        found = [p for p in found if p.stem in only]
    return found


def markdown_rows(output: str, bench: str) -> list[Row]:
    """Rows of the markdown tables in ``output``, columns mapped by their header names.

    The first column is the metric, ``figure`` (or the second column) the figure; columns
    named like ``baseline``, ``ratio``, ``target`` and ``ok`` fill those cells.
    """
    rows: list[Row] = []
    header: list[str] | None = None
    previous: list[str] | None = None
    for raw in output.splitlines():
        line = raw.strip()
        if not (line.startswith("|") and line.endswith("|")):
            header = previous = None
            continue
        cells = [c.strip() for c in line[1:-1].split("|")]
        if all(set(c) <= {"-", ":", " "} and c for c in cells):  # |---|---|
            header = [c.lower() for c in previous] if previous else None
            continue
        previous = cells
        if header is not None and len(cells) > len(header) >= 2:
            # a '|' inside the first cell, e.g. "2 processes (router | email)"
            extra = len(cells) - len(header)
            cells = [" | ".join(cells[: extra + 1]), *cells[extra + 1 :]]
        if header is None or len(cells) != len(header) or len(cells) < 2:
            continue

        def pick(word: str, cells: list[str] = cells, header: list[str] = header) -> str:
            for name, cell in zip(header, cells, strict=True):
                if word in name:
                    return cell or "-"
            return "-"

        figure = pick("figure")
        rows.append(
            Row(
                metric=cells[0],
                figure=figure if figure != "-" else cells[1],
                baseline=pick("baseline"),
                ratio=pick("ratio"),
                target=pick("target"),
                ok=pick("ok"),
                bench=bench,
            )
        )
    return rows


def run_one(path: Path, quick: bool, timeout: float) -> tuple[list[Row], int | None, float]:
    """Run one script; echo its output; return its rows, exit code (None: timed out), time."""
    name = path.stem
    flags = ["--quick"] if quick and "--quick" in path.read_text(errors="replace") else []
    with tempfile.NamedTemporaryFile("w+", suffix=".jsonl", delete=False) as rows_file:
        rows_path = Path(rows_file.name)
    env = {**os.environ, ROWS_ENV: str(rows_path), "PYTHONUNBUFFERED": "1"}
    print(f"\n=== bench/{name}.py {' '.join(flags)}".rstrip(), flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}", *flags],
        cwd=_HERE.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout stops it and its children
    )
    captured: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            captured.append(line)
            print(f"  {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    code: int | None
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
        print(f"\n  !! bench/{name}.py exceeded {timeout:.0f} s: stopping it", flush=True)
        _stop_group(proc)
    reader.join(10)
    took = time.monotonic() - start
    status = "timed out" if code is None else f"exit {code}"
    print(f"=== bench/{name}.py: {status} after {took:.0f} s", flush=True)
    rows = []
    try:
        for line in rows_path.read_text().splitlines():
            rows.append(Row(**json.loads(line)))
    finally:
        rows_path.unlink(missing_ok=True)
    if not rows:
        rows = markdown_rows("".join(captured), name)
    return rows, code, took


def _stop_group(proc: subprocess.Popen[str]) -> None:
    # The group is the one this process created for the script (start_new_session).
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="pass --quick to every script")
    p.add_argument("--only", nargs="*", metavar="NAME", help="e.g. --only email slack")
    p.add_argument("--timeout", type=float, default=None, help="seconds per script")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args()
    timeout = args.timeout or (90.0 if args.quick else 180.0)

    table: list[tuple[str, ...]] = []
    failed: list[str] = []
    missed = 0
    for path in scripts(args.only):
        rows, code, took = run_one(path, args.quick, timeout)
        name = path.stem
        status = "timed out" if code is None else f"exit {code}"
        if code != 0:
            failed.append(f"{name} ({status})")
        if not rows:
            rows = [Row(f"(no table rows: see its output, {status})", f"{took:.0f} s", bench=name)]
        elif code != 0:
            rows.append(Row(f"(script failed: {status})", f"{took:.0f} s", bench=name))
        for row in rows:
            table.append((row.bench or name, *row.cells()))
            missed += row.ok == "NO"

    print("\n## all benchmarks\n")
    print_table(("bench", *HEADER), table)
    print(
        f"\n{len(table)} rows, {missed} targets missed, {len(failed)} scripts failed"
        + (f": {', '.join(failed)}" if failed else "")
    )
    if failed or (args.strict and missed):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
