"""The bus: one NATS connection and the hub's topology.

Every stream, KV bucket and durable consumer the hub uses is declared here, in one place,
by :meth:`Bus.ensure_topology`. Services call it at start; it is idempotent and updates a
stream whose settings changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from schemas.errors import BusUnavailableError
from schemas.subjects import delivery_filter
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
    OUTBOX,
    ROUTER_CONSUMER,
    SCHEDULES,
)

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
