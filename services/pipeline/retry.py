"""How often and how far apart a delivery is retried, per channel (``IMPACTBUS_RETRY_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.bus.failures import RetryPolicy


class RetrySettings(BaseSettings):
    """``IMPACTBUS_RETRY_BASE_S``, ``_CAP_S``, ``_ATTEMPTS`` and per-channel overrides.

    ``IMPACTBUS_RETRY_CHANNELS='{"slack": {"attempts": 5}}'`` overrides one channel.
    """

    model_config = SettingsConfigDict(
        env_prefix="IMPACTBUS_RETRY_", env_file=".env", extra="ignore"
    )

    base_s: float = Field(2.0, gt=0)
    cap_s: float = Field(900.0, gt=0)
    attempts: int = Field(8, ge=1)
    channels: dict[str, dict[str, float]] = Field(default_factory=dict)

    def for_channel(self, channel: str) -> RetryPolicy:
        """The policy of one channel."""
        base = {"base_s": self.base_s, "cap_s": self.cap_s, "attempts": self.attempts}
        return RetryPolicy.model_validate({**base, **self.channels.get(channel, {})})
