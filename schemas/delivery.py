"""A delivery job (one event to one target on one channel) and its receipt."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.events import Event
from schemas.targets import Target
from schemas.text import Line, Token


class Rendered(BaseModel):
    """Content rendered before the job was queued (digests): notifiers send it as is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str = Field(max_length=300)
    text: str
    html: str | None = None
    blocks: list[dict[str, Any]] | None = None


class Delivery(BaseModel):
    """One message for one target: what a notifier sends.

    A digest is a delivery with ``digest_period`` and ``rendered`` set (``event`` is then
    the newest event it covers).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: Event
    recipient: Token
    recipient_name: Line | None = None
    subscription: str | None = None
    subscription_version: str | None = Field(
        None, max_length=40, description="the subscription's version, for its unsubscribe link"
    )
    recipient_version: str | None = Field(
        None, max_length=40, description="the recipient's version, for their personal links"
    )
    target: Target
    timezone: str = "UTC"
    locale: str = "en"
    digest_period: str | None = None
    rendered: Rendered | None = None
    reply_to: str | None = Field(
        None,
        max_length=500,
        description="set by the delivery worker, never queued: the first email Message-ID "
        "or Slack ts of this topic's thread at this target, for a follow-up to reply to",
    )

    @property
    def job_id(self) -> str:
        """Deterministic id: hash(event, target, channel). Used as ``Nats-Msg-Id``."""
        base = f"{self.event.key}\x00{self.target.key}\x00{self.target.channel}"
        if self.digest_period:
            base = f"digest\x00{self.recipient}\x00{self.digest_period}\x00{self.target.key}"
        return hashlib.sha256(base.encode()).hexdigest()[:40]


class DeliveryResult(BaseModel):
    """What a notifier reports after a successful send."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str
    target: str
    provider_id: str | None = Field(None, description="Message-ID, Slack ts, webhook-id")
    sent_at: AwareDatetime
    outcome: Literal["sent", "outbox"] = "sent"
