"""The whole hub as a user runs it: ``impactbus up`` in a child process.

CLI commands run as child processes, with a real SMTP sink and the Slack fake. The hub
starts its own embedded nats-server (never the machine's own NATS: its default port is
taken, so it picks a free one) with its store in a temp data dir, exactly like ``make up``
on a fresh machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.bus import Bus, NatsSettings, free_port
from tests.fakes.slack import SlackFake
from tests.fakes.smtp import SmtpSink

BIN = Path(sys.executable).parent


@dataclass
class Hub:
    """A running ``impactbus up`` and the environment its CLI commands share."""

    env: dict[str, str]
    data_dir: Path
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    _pump: threading.Thread = field(default_factory=threading.Thread)

    def start(self, *args: str, timeout: float = 30) -> Hub:
        self.output.clear()
        self.proc = subprocess.Popen(
            [str(BIN / "impactbus"), *(args or ("up",))],
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir.parent,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc
            assert self.proc.stdout
            for line in self.proc.stdout:
                self.output.append(line.rstrip("\n"))
                if "Ctrl-C to stop" in line:
                    ready.set()
            ready.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise AssertionError("hub did not start:\n" + "\n".join(self.output))
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("hub did not stop in time:\n" + "\n".join(self.output)) from None
        finally:
            self._close(proc)

    def _close(self, proc: subprocess.Popen[str]) -> None:
        self._pump.join(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._close(self.proc)
            self.proc = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN / "impactbus"), *args],
            env=self.env,
            text=True,
            capture_output=True,
            timeout=60,
            cwd=self.data_dir.parent,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"impactbus {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done

    @property
    def nats_url(self) -> str:
        if self.env.get("IMPACTBUS_NATS_URL"):
            return self.env["IMPACTBUS_NATS_URL"]
        return str(json.loads((self.data_dir / "hub.json").read_text())["nats_url"])

    def wait_quiet(self, timeout: float = 20) -> None:
        """Wait until the router and every delivery worker have nothing pending."""
        asyncio.run(_wait_quiet(self.nats_url, timeout))


async def _wait_quiet(url: str, timeout: float) -> None:
    bus = await Bus.connect(url, NatsSettings(url=url), reconnect=False)
    try:
        deadline = time.monotonic() + timeout
        while True:
            busy = []
            for stream, name in (
                ("EVENTS", "router"),
                ("DELIVERIES", "email"),
                ("DELIVERIES", "slack"),
                ("DELIVERIES", "webhook"),
            ):
                info = await bus.js.consumer_info(stream, name)
                if info.num_pending or info.num_ack_pending:
                    busy.append(f"{name}: {info.num_pending}/{info.num_ack_pending}")
            if not busy:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"hub still busy after {timeout}s: {busy}")
            await asyncio.sleep(0.05)
    finally:
        await bus.close()


@pytest.fixture
def hub_env(tmp_path: Path, smtp_sink: SmtpSink, slack_fake: SlackFake) -> dict[str, str]:
    """Environment of a hub on embedded defaults, wired to the SMTP sink and Slack fake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPACTBUS_")}
    env.update(
        {
            "IMPACTBUS_DATA_DIR": str(tmp_path / ".impactbus"),
            "IMPACTBUS_HTTP_PORT": str(free_port()),
            "IMPACTBUS_SMTP_HOST": "127.0.0.1",
            "IMPACTBUS_SMTP_PORT": str(smtp_sink.port),
            "IMPACTBUS_SMTP_TLS": "none",
            "IMPACTBUS_EMAIL_FROM": "Shape Up Somerville <hub@impactbus.test>",
            "IMPACTBUS_SLACK_TOKEN": "xoxb-test-token",
            "IMPACTBUS_SLACK_API_URL": slack_fake.api_url,
            "IMPACTBUS_RETRY_BASE_S": "0.05",
            "IMPACTBUS_RETRY_CAP_S": "0.2",
            "IMPACTBUS_RETRY_ATTEMPTS": "4",
            "IMPACTBUS_HEALTH_PORT": "0",
            "IMPACTBUS_SHUTDOWN_GRACE_S": "5",
        }
    )
    return env


@pytest.fixture
def hub(tmp_path: Path, hub_env: dict[str, str]) -> Iterator[Hub]:
    """A started hub; stopped (by PID) at the end of the test."""
    h = Hub(env=hub_env, data_dir=tmp_path / ".impactbus").start()
    yield h
    h.stop()
