"""Where a delivery goes: one target model per channel, discriminated by ``channel``."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, WithJsonSchema
from pydantic.networks import validate_email

from schemas.text import Line


@lru_cache(maxsize=65_536)
def _email(value: str) -> str:
    # Same rules as pydantic's EmailStr; cached because every delivery job carries an
    # address and email-validator costs tens of microseconds per call.
    return validate_email(value)[1]


Email = Annotated[
    str, AfterValidator(_email), WithJsonSchema({"type": "string", "format": "email"})
]
"""An email address, validated like ``EmailStr`` (results cached)."""

Channel = Literal["email", "slack", "webhook"]
CHANNELS: Final[tuple[Channel, ...]] = ("email", "slack", "webhook")


class _Target(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmailTarget(_Target):
    """An email address (and the display name to put beside it)."""

    channel: Literal["email"] = "email"
    address: Email
    name: Line | None = None

    @property
    def key(self) -> str:
        """Identity of the target for idempotency."""
        return f"email:{self.address.lower()}"


class SlackTarget(_Target):
    """A Slack conversation (channel id like ``C123`` or ``#name``)."""

    channel: Literal["slack"] = "slack"
    conversation: Annotated[str, Field(pattern=r"^(#[a-z0-9_-]{1,80}|[A-Z0-9]{1,32})$")]

    @property
    def key(self) -> str:
        """Identity of the target for idempotency."""
        return f"slack:{self.conversation}"


class WebhookTarget(_Target):
    """An HTTPS endpoint that receives signed JSON (Standard Webhooks)."""

    channel: Literal["webhook"] = "webhook"
    url: HttpUrl

    @property
    def key(self) -> str:
        """Identity of the target for idempotency."""
        return f"webhook:{self.url}"


Target = Annotated[EmailTarget | SlackTarget | WebhookTarget, Field(discriminator="channel")]
