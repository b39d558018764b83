"""The dev outbox: what would have been sent, recorded in the ``OUTBOX`` stream.

With no SMTP relay or Slack token configured, the hub still composes every message
exactly as it would send it (:func:`~notifiers.email.compose.email_parts`,
:func:`~notifiers.slack.blocks.compose_slack`) and publishes it as JSON to ``outbox.<channel>``
(stream ``OUTBOX``, declared in ``services.bus``) with ``Nats-Msg-Id`` = the job id,
so a retried job is recorded once. The notifier knows no bus: it is handed a
:data:`Publish` function (``services.bus.outbox.outbox_publisher`` in the hub, a list in
unit tests). The web UI and the CLI read the outbox back with
``services.bus.outbox.read_outbox``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import ClassVar, Final

from pydantic import JsonValue

from notifiers.base import LinkMaker, NotifierBase, TransientDeliveryError
from notifiers.email.compose import email_parts
from notifiers.slack.blocks import compose_slack
from schemas.delivery import Delivery, DeliveryResult
from schemas.errors import ImpactbusError, InvalidInputError
from schemas.subjects import outbox_subject

OUTBOX_CHANNELS: Final = ("email", "slack")

OutboxEntry = dict[str, JsonValue]
Publish = Callable[[str, bytes, dict[str, str]], Awaitable[None]]
"""Store one message (subject, payload, headers) and wait until it is stored.

Raises ``BusUnavailableError`` (or another ``ImpactbusError``), ``TimeoutError`` or
``OSError`` when it could not be stored.
"""


class OutboxNotifier(NotifierBase):
    """Records deliveries of one channel in the outbox instead of sending them.

    Args:
        publish: stores one record (the hub's: ``services.bus.outbox.outbox_publisher``).
        channel: ``"email"`` or ``"slack"``: whose messages this stands in for.
        links: builds each recipient's links, as the real notifier would.
        sender: the email ``From`` header.

    Raises:
        InvalidInputError: ``channel`` has no outbox.
    """

    # The outbox stands in for whichever channel it is built for, so ``channel`` is set
    # per instance; this class value only names it when no instance is at hand.
    channel: ClassVar[str] = "outbox"

    def __init__(
        self,
        publish: Publish,
        channel: str,
        links: LinkMaker,
        sender: str,
    ) -> None:
        if channel not in OUTBOX_CHANNELS:
            raise InvalidInputError(f"no outbox for channel {channel!r}: use email or slack")
        self._publish = publish
        self.channel = channel  # type: ignore[misc]  # see the class attribute
        self._links = links
        self._sender = sender

    def entry(self, delivery: Delivery, sent_at: datetime) -> OutboxEntry:
        """The JSON record of ``delivery``: exactly what would have been sent."""
        common: OutboxEntry = {
            "channel": self.channel,
            "recipient": delivery.recipient,
            "job_id": delivery.job_id,
            "event_id": delivery.event.id,
            # whose message it is: the outbox page shows a backbone only its initiatives'
            "initiative": delivery.event.initiative,
            "digest": delivery.digest_period is not None,
            "sent_at": sent_at.isoformat(),
        }
        links = self._links(delivery)
        if self.channel == "slack":
            message = compose_slack(delivery, links)
            blocks: list[JsonValue] = list(message["blocks"])
            return {
                **common,
                "conversation": message["channel"],
                "text": message["text"],
                "blocks": blocks,
            }
        parts = email_parts(delivery, links, self._sender)
        headers: dict[str, JsonValue] = dict(parts.headers)
        return {
            **common,
            "to": parts.header("To") or "",
            "subject": parts.header("Subject") or "",
            "text": parts.text,
            "html": parts.html,
            "message_id": parts.header("Message-ID") or "",
            "headers": headers,
        }

    async def send(self, delivery: Delivery) -> DeliveryResult:
        """Record one delivery in the outbox and wait for JetStream's acknowledgement.

        Raises:
            TransientDeliveryError: the outbox could not be written (NATS down, timeout).
            PermanentDeliveryError: the delivery cannot be composed (wrong target).
        """
        sent_at = datetime.now(UTC)
        record = self.entry(delivery, sent_at)
        try:
            await self._publish(
                outbox_subject(self.channel),
                json.dumps(record).encode(),
                {"Nats-Msg-Id": delivery.job_id},
            )
        except (TimeoutError, OSError, ImpactbusError) as exc:
            raise TransientDeliveryError(f"outbox: {exc or type(exc).__name__}") from exc
        message_id = record.get("message_id")
        return DeliveryResult(
            channel=self.channel,
            target=delivery.target.key,
            provider_id=message_id if isinstance(message_id, str) else delivery.job_id,
            sent_at=sent_at,
            outcome="outbox",
        )
