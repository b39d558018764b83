"""The bus: one NATS connection and the hub's topology.

Every stream, KV bucket and durable consumer the hub uses is declared here, in one place,
by :meth:`Bus.ensure_topology` (subjects and consumer filters from the table in
:mod:`services.bus.topology`, which the AsyncAPI export reads too). Services call it at
start; it is idempotent and updates a stream whose settings changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from schemas.errors import BusUnavailableError, TopologyMismatchError
from schemas.targets import CHANNELS
from services.bus import natsclient
from services.bus.embedded import MiB, NatsSettings
from services.bus.names import (
    DEAD,
    DELIVERIES,
    DELIVERY_LOG,
    DIGEST_CONSUMER,
    DIGESTS,
    EVENTS,
    KV_DIGEST_STATE,
    KV_IDEMPOTENCY,
    KV_RECIPIENTS,
    KV_SENT,
    KV_SUBSCRIPTIONS,
    KV_THREADS,
    KV_TOKENS,
    KV_WEBHOOK_SECRETS,
    OUTBOX,
    ROUTER_CONSUMER,
    SCHEDULES,
)
from services.bus.topology import STREAMS, consumer, stream_subjects

log = logging.getLogger("impactbus.bus")


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
            if not reconnect:
                return  # the caller gets the error itself (a CLI command: one line)
            # nats-py's default prints a traceback per reconnect attempt: one line instead.
            state["errors"] += 1
            if state["errors"] in (1, 10) or state["errors"] % 100 == 0:
                log.warning("nats: %s", _redact(str(exc) or type(exc).__name__))

        async def on_disconnect() -> None:
            if state.get("closing") or not reconnect:
                return  # closing on purpose, or not reconnecting: nothing to announce
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

        def stream(name: str, **specific: Any) -> api.StreamConfig:
            # what every stream shares: its subjects and description from the topology
            # table, the replicas of the install, file storage
            return api.StreamConfig(
                name=name,
                subjects=stream_subjects(name),
                num_replicas=r,
                storage=api.StorageType.FILE,
                description=STREAMS[name].description,
                **specific,
            )

        limits = api.RetentionPolicy.LIMITS
        return [
            stream(
                EVENTS,
                retention=limits,
                max_age=s.events_max_age_days * day,
                max_bytes=s.events_max_bytes,
                duplicate_window=s.duplicate_window_s,
                max_msg_size=1 * MiB,
            ),
            stream(
                DELIVERIES,
                retention=api.RetentionPolicy.WORK_QUEUE,
                duplicate_window=s.duplicate_window_s,
                max_msg_size=4 * MiB,
            ),
            stream(
                DIGESTS,
                retention=limits,
                max_age=90 * day,
                duplicate_window=s.duplicate_window_s,
                allow_direct=True,
            ),
            stream(
                SCHEDULES,
                retention=limits,
                max_age=7 * day,
                allow_msg_schedules=True,
                allow_msg_ttl=True,
            ),
            stream(DEAD, retention=limits, max_age=30 * day),
            stream(DELIVERY_LOG, retention=limits, max_age=30 * day),
            stream(OUTBOX, retention=limits, max_msgs=10_000, max_age=30 * day),
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
            day = 86_400.0
            for bucket, ttl, history in (
                (KV_RECIPIENTS, None, 1),
                (KV_SUBSCRIPTIONS, None, 1),
                (KV_TOKENS, None, 1),
                (KV_THREADS, 180 * day, 1),
                (KV_SENT, 7 * day, 1),
                (KV_DIGEST_STATE, None, 1),
                # body hash per Idempotency-Key (services.api.idempotency): kept as long as
                # the EVENTS stream deduplicates the event ids the keys become
                (
                    KV_IDEMPOTENCY,
                    self.settings.duplicate_window_s + self.settings.publish_timeout_s,
                    1,
                ),
                # per-target webhook signing secrets (services.bus.webhook_secrets); a few
                # revisions kept so an operator can see what a rotation replaced
                (KV_WEBHOOK_SECRETS, None, 5),
            ):
                try:
                    self._kv[bucket] = await self.js.key_value(bucket)
                except nats.js.errors.BucketNotFoundError:
                    self._kv[bucket] = await self.js.create_key_value(
                        api.KeyValueConfig(
                            bucket=bucket,
                            history=history,
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
                    description=consumer(EVENTS, ROUTER_CONSUMER).description,
                ),
            )
            for channel in CHANNELS:
                await self._ensure_consumer(DELIVERIES, self.delivery_consumer_config(channel))
            await self._ensure_consumer(
                SCHEDULES,
                api.ConsumerConfig(
                    durable_name=DIGEST_CONSUMER,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    filter_subject=consumer(SCHEDULES, DIGEST_CONSUMER).filter_subject,
                    ack_wait=self.settings.ack_wait_s,
                    deliver_policy=api.DeliverPolicy.NEW,
                    max_deliver=-1,
                    description=consumer(SCHEDULES, DIGEST_CONSUMER).description,
                ),
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise BusUnavailableError(
                f"cannot declare streams: {exc or type(exc).__name__}"
            ) from None

    def delivery_consumer_config(self, channel: str) -> api.ConsumerConfig:
        """The durable work-queue consumer of one channel's delivery workers."""
        decl = consumer(DELIVERIES, channel)
        return api.ConsumerConfig(
            durable_name=channel,
            ack_policy=api.AckPolicy.EXPLICIT,
            filter_subject=decl.filter_subject,
            ack_wait=self.settings.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=20_000,
            description=decl.description,
        )

    async def _ensure_stream(self, cfg: api.StreamConfig) -> None:
        """Create the stream, or bring an existing one to ``cfg`` where NATS allows it.

        Raises:
            TopologyMismatchError: the stream differs in a way NATS cannot change in
                place (retention, storage...); the message says what and how to fix it.
        """
        assert cfg.name
        try:
            info = await self.js.stream_info(cfg.name)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(cfg)
            return
        changes = stream_differences(info.config, cfg)
        if not changes:
            return
        try:
            await self.js.update_stream(cfg)
        except nats.js.errors.APIError as exc:
            raise TopologyMismatchError(
                f"stream {cfg.name} on the NATS server differs from what the hub declares "
                f"({_describe(changes)}) and NATS refuses to change it in place: "
                f"{exc.description or exc}. Restore the setting it was created with, or "
                f"back up and delete the stream (`nats stream rm {cfg.name}`) so the hub "
                "creates it anew"
            ) from None
        log.info("stream %s updated: %s", cfg.name, _describe(changes))

    async def _ensure_consumer(self, stream: str, cfg: api.ConsumerConfig) -> None:
        assert cfg.durable_name
        try:
            await self.js.consumer_info(stream, cfg.durable_name)
        except nats.js.errors.NotFoundError:
            await self.js.add_consumer(stream, cfg)


# What the server reports for a limit the declaration leaves unset: nats-py sends None as
# "no limit", so an install that once had a limit loses it when the declaration drops it.
_UNSET_LIMITS: Final[dict[str, object]] = {
    "max_msgs": -1,
    "max_bytes": -1,
    "max_age": 0.0,
    "max_msg_size": -1,
}
# Fields the hub declares but never compares: the server fills them in (or echoes them
# in another form), so a difference there is not a change of the declaration.
_NOT_COMPARED: Final = frozenset({"name"})


def stream_differences(
    current: api.StreamConfig, declared: api.StreamConfig
) -> dict[str, tuple[object, object]]:
    """The fields where ``current`` (the server's) differs from ``declared``.

    A field the declaration leaves unset (``None`` or nats-py's default) counts only
    for the limits, where unset means no limit; any other is the server's to choose.

    Returns:
        Field name -> (the server's value, the declared value).
    """
    changes: dict[str, tuple[object, object]] = {}
    for f in dataclasses.fields(api.StreamConfig):
        if f.name in _NOT_COMPARED:
            continue
        want = getattr(declared, f.name)
        if f.name in _UNSET_LIMITS:
            want = _UNSET_LIMITS[f.name] if want is None else want
        elif want is None or want == f.default:
            continue  # left to the server (which may set it itself, as for schedules)
        have = getattr(current, f.name)
        if f.name in _UNSET_LIMITS and have is None:
            have = _UNSET_LIMITS[f.name]
        if have != want:
            changes[f.name] = (have, want)
    return changes


def _describe(changes: dict[str, tuple[object, object]]) -> str:
    return ", ".join(
        f"{name} {_plain(have)} -> {_plain(want)}" for name, (have, want) in changes.items()
    )


def _plain(value: object) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    # nats-py hands some enums back from the server as their plain strings
    return value if isinstance(value, str) else repr(value)


def _redact(url: str) -> str:
    """A URL without its password (never log a secret)."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
