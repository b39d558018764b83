"""The dev outbox: what would have been sent, recorded in the ``OUTBOX`` stream.

With no SMTP relay or Slack token configured, the hub still composes every message
exactly as it would send it (:func:`~notifiers.email.email_parts`,
:func:`~notifiers.slack.compose_slack`) and publishes it as JSON to ``outbox.<channel>``
(stream ``OUTBOX``, declared in ``services/bus.py``) with ``Nats-Msg-Id`` = the job id,
so a retried job is recorded once. The web UI and the tests read it back with
:func:`read_outbox`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import ClassVar, Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from pydantic import JsonValue

from notifiers.base import LinkMaker, NotifierBase, TransientDeliveryError
from notifiers.email import email_parts
from notifiers.slack import compose_slack
from schemas.delivery import Delivery, DeliveryResult
from schemas.errors import BusUnavailableError, InvalidInputError, NotFoundError
from schemas.subjects import outbox_subject

OUTBOX_STREAM: Final = "OUTBOX"
OUTBOX_CHANNELS: Final = ("email", "slack")

OutboxEntry = dict[str, JsonValue]
Publish = Callable[[str, bytes, dict[str, str]], Awaitable[None]]
"""Store one message in JetStream and wait for its acknowledgement (raises on failure)."""


class OutboxNotifier(NotifierBase):
    """Records deliveries of one channel in the outbox instead of sending them.

    Args:
        js: the JetStream context of the hub's bus.
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
        js: JetStreamContext,
        channel: str,
        links: LinkMaker,
        sender: str,
    ) -> None:
        if channel not in OUTBOX_CHANNELS:
            raise InvalidInputError(f"no outbox for channel {channel!r}: use email or slack")
        self._js = js
        self.channel = channel  # type: ignore[misc]  # see the class attribute
        self._links = links
        self._sender = sender
        self.publish: Publish = self._js_publish
        """How a record is stored; the hub sets its pipelined publisher (services.bus.acks)."""

    async def _js_publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        await self._js.publish(subject, payload, headers=headers)

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
            await self.publish(
                outbox_subject(self.channel),
                json.dumps(record).encode(),
                {"Nats-Msg-Id": delivery.job_id},
            )
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise TransientDeliveryError(f"outbox: {exc or type(exc).__name__}") from exc
        message_id = record.get("message_id")
        return DeliveryResult(
            channel=self.channel,
            target=delivery.target.key,
            provider_id=message_id if isinstance(message_id, str) else delivery.job_id,
            sent_at=sent_at,
            outcome="outbox",
        )


async def read_outbox(
    js: JetStreamContext,
    channel: str | None = None,
    limit: int = 50,
) -> list[OutboxEntry]:
    """The newest ``limit`` outbox entries (of one channel, or all), oldest first.

    Each entry carries its stream sequence as ``seq``: the number :func:`get_outbox_entry`
    takes (``impactbus outbox show <n>``).

    Walks the stream backwards from its last sequence, one message get per sequence: a
    dev outbox is small (the stream keeps 10,000 messages) and this needs no consumer.

    Raises:
        BusUnavailableError: NATS could not be asked.
    """
    subject = outbox_subject(channel) if channel else None
    entries: list[OutboxEntry] = []
    try:
        state = (await js.stream_info(OUTBOX_STREAM)).state
        seq = state.last_seq
        while seq >= max(state.first_seq, 1) and len(entries) < limit:
            try:
                msg = await js.get_msg(OUTBOX_STREAM, seq=seq)
            except nats.js.errors.NotFoundError:  # aged out or deleted meanwhile
                msg = None
            seq -= 1
            if msg is None or msg.data is None or (subject and msg.subject != subject):
                continue
            entry = json.loads(msg.data)
            if isinstance(entry, dict):
                entries.append({**entry, "seq": msg.seq})
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BusUnavailableError(f"cannot read the outbox: {exc or type(exc).__name__}") from exc
    entries.reverse()
    return entries


async def get_outbox_entry(js: JetStreamContext, seq: int) -> OutboxEntry:
    """The outbox entry with stream sequence ``seq`` (the number :func:`read_outbox` gives).

    Raises:
        NotFoundError: no such entry (never recorded, or aged out of the stream).
        BusUnavailableError: NATS could not be asked.
    """
    try:
        msg = await js.get_msg(OUTBOX_STREAM, seq=seq)
    except nats.js.errors.NotFoundError:
        raise NotFoundError(
            f"no outbox message {seq}: see the numbers `impactbus outbox` shows"
        ) from None
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BusUnavailableError(f"cannot read the outbox: {exc or type(exc).__name__}") from exc
    entry = json.loads(msg.data or b"null")
    if not isinstance(entry, dict):
        raise NotFoundError(f"outbox message {seq} is unreadable")
    return {**entry, "seq": seq}
