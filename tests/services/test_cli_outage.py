"""A CLI command whose NATS goes away mid-command says so in one line and exits non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from services.bus import EmbeddedNats

BIN = Path(sys.executable).parent


def test_tail_ends_with_one_error_line_when_nats_stops(
    nats_factory: Callable[[], EmbeddedNats], tmp_path: Path
) -> None:
    server = nats_factory()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPACTBUS_")}
    env["IMPACTBUS_NATS_URL"] = server.url
    env["IMPACTBUS_DATA_DIR"] = str(tmp_path / ".impactbus")
    proc = subprocess.Popen(
        [str(BIN / "impactbus"), "tail"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # ends when the process closes stderr (it exited)
            seen.append(line)
            if line.startswith("watching"):
                break
        assert any(line.startswith("watching") for line in seen), "".join(seen)
        server.stop()
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "Traceback" not in rest
    # one line that says what happened, and nothing that says otherwise ("reconnecting")
    assert [line for line in rest.splitlines() if line.strip()] == [
        next(line for line in rest.splitlines() if line.startswith("error:"))
    ], rest
    assert "NATS" in rest
