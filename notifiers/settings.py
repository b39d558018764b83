"""The notifiers' settings: how each channel is reached, read from ``IMPACTBUS_*``.

Every notifier setting that comes from the environment (or ``.env``) is declared here, so
the channel modules hold no environment-reading classes: they take these as arguments.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from notifiers.webhook_signing import decode_secret


class SmtpSettings(BaseSettings):
    """How to reach the SMTP relay (``IMPACTBUS_SMTP_*``; sender: ``IMPACTBUS_EMAIL_FROM``)."""

    model_config = SettingsConfigDict(
        env_prefix="IMPACTBUS_SMTP_",
        env_file=".env",
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    host: str | None = Field(None, description="unset: email goes to the dev outbox")
    port: int = Field(587, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = Field(None, repr=False)
    tls: Literal["none", "starttls", "tls"] = "starttls"
    timeout: float = Field(15, gt=0, description="seconds, per SMTP command")
    pool_size: int = Field(8, ge=1, le=64)
    from_address: str = Field(
        "impactbus <noreply@impactbus.invalid>", validation_alias="IMPACTBUS_EMAIL_FROM"
    )

    @property
    def configured(self) -> bool:
        """Whether a relay is configured (otherwise the dev outbox is used)."""
        return bool(self.host)


class SlackSettings(BaseSettings):
    """How to reach Slack (``IMPACTBUS_SLACK_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="IMPACTBUS_SLACK_", env_file=".env", extra="ignore"
    )

    token: SecretStr | None = Field(None, repr=False, description="bot token; unset: outbox")
    api_url: str = "https://slack.com/api/"
    timeout: int = Field(15, ge=1, description="seconds per API call")
    rate_limit_retries: int = Field(2, ge=0, le=10, description="429 retries per message")
    per_channel_per_s: float = Field(
        1.0, ge=0, description="posts per second per conversation (Slack: ~1); 0: no pacing"
    )

    @property
    def configured(self) -> bool:
        """Whether a token is set (otherwise the dev outbox is used)."""
        return self.token is not None and bool(self.token.get_secret_value())


class WebhookSettings(BaseSettings):
    """Settings of the webhook channel (``IMPACTBUS_WEBHOOK_*``)."""

    model_config = SettingsConfigDict(env_prefix="IMPACTBUS_WEBHOOK_")

    timeout: float = Field(15.0, gt=0, description="seconds per attempt, connect to response")
    allow_loopback: bool = Field(False, description="tests only: permit 127.0.0.0/8 and ::1")
    secret: SecretStr = Field(
        SecretStr(""),
        description="comma-separated whsec_ secrets: the first is newest; all are sent",
    )

    @field_validator("secret")
    @classmethod
    def _well_formed(cls, value: SecretStr) -> SecretStr:
        for secret in _split(value.get_secret_value()):
            decode_secret(secret)
        return value

    @property
    def secrets(self) -> list[str]:
        """The configured secrets, newest first."""
        return _split(self.secret.get_secret_value())


def _split(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


class SecretStoreSettings(BaseSettings):
    """Rotation and storage of per-target secrets (``IMPACTBUS_WEBHOOK_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="IMPACTBUS_WEBHOOK_", env_file=".env", extra="ignore"
    )

    rotation_grace_h: float = Field(
        24.0, ge=0, description="hours an old secret stays valid after a rotation"
    )
    cache_s: float = Field(5.0, ge=0, description="how long a worker reuses what it read")
