"""`make up` from a clean clone in a fresh directory: a new user's first command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from services.bus import DEFAULT_PORT, free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_make_up_from_a_clean_clone(tmp_path: Path) -> None:
    clone = tmp_path / "impactbus"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMPACTBUS_", "VIRTUAL_ENV", "PYTEST"))
    }
    env["IMPACTBUS_HTTP_PORT"] = str(free_port())
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    proc = subprocess.Popen(
        ["make", "up"],
        cwd=clone,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "Ctrl-C to stop" in line:
                ready.set()
        ready.set()

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    try:
        assert ready.wait(540), "make up did not come up:\n" + "\n".join(lines[-40:])
        assert proc.poll() is None, "\n".join(lines[-40:])
        info = json.loads((clone / ".impactbus" / "hub.json").read_text())
        # the machine's own NATS holds the default port: the hub must have picked another
        assert not info["nats_url"].endswith(f":{DEFAULT_PORT}")
        assert (clone / ".impactbus" / "nats").is_dir()
        status = subprocess.run(
            [str(clone / ".venv/bin/impactbus"), "status"],
            cwd=clone,
            env=env,
            text=True,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert "EVENTS" in status.stdout
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        # make itself dies of the SIGINT (or reports it as 2/130) once impactbus has stopped
        assert proc.wait(60) in (0, 2, 130, -signal.SIGINT), "\n".join(lines[-40:])
        assert any("impactbus: stopped" in line for line in lines), "\n".join(lines[-40:])
        assert not (clone / ".impactbus" / "hub.json").exists()
        with pytest.raises(ProcessLookupError):
            os.kill(int(info["nats_pid"]), 0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pumping.join(10)
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(clone, ignore_errors=True)
