"""Hub-wide settings (``IMPACTBUS_*``) that are not owned by one component, and the runtime.

Component settings live beside their component: ``NatsSettings`` in ``services.bus``,
the channels' ``SmtpSettings``, ``SlackSettings``... in ``notifiers.settings``.

:class:`Runtime` is what the services of one process share. It lives here, the lowest
layer that knows the bus and the hub settings, so every service above (pipeline, digest,
API, web) takes it typed without importing the hub that builds it (``services.runtime``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from notifiers.base import LinkMaker, no_links
from notifiers.registry import ChannelSettings
from notifiers.settings import SecretStoreSettings, SlackSettings, SmtpSettings, WebhookSettings
from schemas.directory import TimeZone
from schemas.errors import InvalidInputError
from services.bus import Bus
from services.bus.consumer import ConsumerStats
from services.bus.failures import RetryPolicy


class HubSettings(BaseSettings):
    """Where the hub keeps its files and how it presents itself."""

    model_config = SettingsConfigDict(env_prefix="IMPACTBUS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".impactbus"), description="embedded NATS store, secret key")
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = Field(None, description="base URL for links in messages")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_grace_s: float = Field(
        20, ge=0, description="on SIGTERM, how long in-flight sends may finish before hand-back"
    )
    # the rule recipients' zones follow: an IANA name, checked when the settings are read
    timezone: TimeZone = Field(
        "UTC", description="IANA zone of times on shared pages (initiative, post, outbox, feeds)"
    )

    @property
    def zone(self) -> ZoneInfo:
        """The hub's time zone (``IMPACTBUS_TIMEZONE``)."""
        return ZoneInfo(self.timezone)

    max_attempts: int = Field(
        5,
        ge=1,
        description="attempts of a message that fails transiently (router, digest ticks)"
        " before it is dead-lettered; delivery workers use IMPACTBUS_RETRY_*",
    )
    backoff_base_s: float = Field(1.0, gt=0, description="first retry delay of such a message")
    backoff_cap_s: float = Field(60.0, gt=0, description="longest retry delay")

    @property
    def failure_policy(self) -> RetryPolicy:
        """How consumers other than the delivery workers retry a transient failure."""
        return RetryPolicy(
            base_s=self.backoff_base_s, cap_s=self.backoff_cap_s, attempts=self.max_attempts
        )

    @property
    def base_url(self) -> str:
        """The URL partners reach the web pages at."""
        return (self.public_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")


_PREFIXES: dict[str, str] = {
    cls.__name__: str(cls.model_config.get("env_prefix", ""))
    for cls in (HubSettings, SmtpSettings, SlackSettings, WebhookSettings, SecretStoreSettings)
}


def load_hub_settings() -> HubSettings:
    """:class:`HubSettings` from the environment, with plain words when one is wrong.

    Raises:
        InvalidInputError: a variable has a value the hub cannot use; the message names it.
    """
    try:
        return HubSettings()
    except ValidationError as exc:
        raise InvalidInputError(_problems(exc)) from None


def _problems(exc: ValidationError) -> str:
    # the prefix of the class that failed: IMPACTBUS_, IMPACTBUS_SMTP_...
    prefix = _PREFIXES.get(exc.title, "IMPACTBUS_")
    return "; ".join(
        f"{prefix}{'_'.join(str(p) for p in err['loc']).upper()}: "
        f"{err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    )


def load_channel_settings() -> ChannelSettings:
    """Every channel's settings from the environment, read once at the process edge.

    Raises:
        InvalidInputError: a variable has a value the hub cannot use; the message names it.
    """
    try:
        return ChannelSettings(
            smtp=SmtpSettings(),
            slack=SlackSettings(),
            webhook=WebhookSettings(),
            webhook_secrets=SecretStoreSettings(),
        )
    except ValidationError as exc:
        raise InvalidInputError(_problems(exc)) from None


@dataclass
class Runtime:
    """What the services of one process share.

    Built once where the process starts (:func:`services.runtime.hub.serve`), from the
    settings read there, and handed to every service it runs.

    Attributes:
        bus: the process's NATS connection.
        hub: the hub settings.
        stop: set on SIGINT/SIGTERM; every service finishes its in-flight work and returns.
        links: builds the signed links of messages (preferences, unsubscribe).
        channels: the channels' settings.
        stats: per consumer, what it handled and how it failed (health, ``/metrics``).
        counters: per service, its own counts (routed, sent...) for ``/metrics``.
    """

    bus: Bus
    hub: HubSettings
    stop: asyncio.Event
    links: LinkMaker = no_links
    channels: ChannelSettings = field(default_factory=load_channel_settings)
    stats: dict[str, ConsumerStats] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
