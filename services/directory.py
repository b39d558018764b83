"""Recipients and subscriptions, kept in JetStream KV.

The CLI, the HTTP API and the web pages all change the directory through this module, so
each rule (a subscription needs a recipient with a contact on its channel, ids are
derived, deleting a recipient deletes their subscriptions) holds everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import ValidationError

from schemas.directory import Recipient, Subscription
from schemas.errors import InvalidInputError, NotFoundError
from schemas.events import describe
from schemas.subjects import validate_token
from schemas.targets import Channel
from services.bus import KV_RECIPIENTS, KV_SUBSCRIPTIONS, Bus
from services.watch import snapshot


class Directory:
    """CRUD over the ``recipients`` and ``subscriptions`` buckets."""

    def __init__(self, recipients: KeyValue, subscriptions: KeyValue) -> None:
        self.recipients = recipients
        self.subscriptions = subscriptions

    @classmethod
    async def open(cls, bus: Bus) -> Directory:
        """The directory of the hub behind ``bus``."""
        return cls(await bus.kv(KV_RECIPIENTS), await bus.kv(KV_SUBSCRIPTIONS))

    # ------------------------------------------------------------------ recipients

    async def put_recipient(self, recipient: Recipient) -> Recipient:
        """Create or replace a recipient.

        A recipient without ``created`` keeps the stored one's, or gets the time now when
        there is none: a deleted recipient created again is a new version, whose old
        personal links no longer work.
        """
        if recipient.created is None:
            try:
                stored = await self.get_recipient(recipient.id)
            except NotFoundError:
                stored = None
            created = stored.created if stored and stored.created else datetime.now(UTC)
            recipient = recipient.model_copy(update={"created": created})
        await self.recipients.put(recipient.id, recipient.model_dump_json().encode())
        return recipient

    async def add_recipient(self, **fields: object) -> Recipient:
        """Validate ``fields`` into a recipient and store it.

        Raises:
            InvalidInputError: a field is invalid (the message names it).
        """
        validate_token(str(fields.get("id", "")), "recipient id")
        try:
            recipient = Recipient.model_validate(fields)
        except ValidationError as exc:
            raise InvalidInputError(describe(exc)) from None
        return await self.put_recipient(recipient)

    async def get_recipient(self, recipient_id: str) -> Recipient:
        """One recipient.

        Raises:
            NotFoundError: no such recipient.
        """
        validate_token(recipient_id, "recipient id")
        try:
            entry = await self.recipients.get(recipient_id)
        except nats.js.errors.KeyNotFoundError:
            raise NotFoundError(f"no recipient {recipient_id!r}") from None
        assert entry.value is not None
        return Recipient.model_validate_json(entry.value)

    async def list_recipients(self) -> list[Recipient]:
        """Every recipient, by id."""
        return [Recipient.model_validate_json(v) for v in await _values(self.recipients)]

    async def delete_recipient(self, recipient_id: str) -> None:
        """Delete a recipient and all their subscriptions.

        Raises:
            NotFoundError: no such recipient.
        """
        await self.get_recipient(recipient_id)
        for sub in await self.list_subscriptions(recipient=recipient_id):
            await self.subscriptions.delete(sub.id)
        await self.recipients.delete(recipient_id)

    # --------------------------------------------------------------- subscriptions

    async def subscribe(
        self,
        recipient_id: str,
        pattern: str,
        channel: Channel,
        mode: Literal["immediate", "digest"] = "immediate",
    ) -> Subscription:
        """Subscribe a recipient to a pattern on a channel (idempotent: same id).

        Raises:
            NotFoundError: no such recipient.
            InvalidInputError: bad pattern, or no contact on that channel.
        """
        recipient = await self.get_recipient(recipient_id)
        if mode == "immediate":
            recipient.target(channel)  # raises when there is no contact on the channel
        elif not recipient.email and not recipient.slack_channel:
            recipient.target(channel)
        sub_id = Subscription.make_id(recipient_id, pattern, channel)
        try:
            # subscribing again keeps the creation time: links already sent stay good
            created = (await self.get_subscription(sub_id)).created_at
        except NotFoundError:
            created = datetime.now(UTC)
        try:
            sub = Subscription(
                id=sub_id,
                recipient=recipient_id,
                pattern=pattern,
                channel=channel,
                mode=mode,
                created_at=created,
            )
        except ValidationError as exc:
            raise InvalidInputError(describe(exc)) from None
        await self.subscriptions.put(sub.id, sub.model_dump_json().encode())
        return sub

    async def get_subscription(self, sub_id: str) -> Subscription:
        """One subscription.

        Raises:
            NotFoundError: no such subscription.
        """
        try:
            entry = await self.subscriptions.get(sub_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
            raise NotFoundError(f"no subscription {sub_id!r}") from None
        assert entry.value is not None
        return Subscription.model_validate_json(entry.value)

    async def put_subscription(self, sub: Subscription) -> Subscription:
        """Replace a subscription (mode changes from the preference centre)."""
        await self.subscriptions.put(sub.id, sub.model_dump_json().encode())
        return sub

    async def unsubscribe(self, sub_id: str) -> Subscription:
        """Delete one subscription.

        Raises:
            NotFoundError: no such subscription.
        """
        sub = await self.get_subscription(sub_id)
        await self.subscriptions.delete(sub_id)
        return sub

    async def list_subscriptions(self, recipient: str | None = None) -> list[Subscription]:
        """Every subscription, or one recipient's."""
        subs = [Subscription.model_validate_json(v) for v in await _values(self.subscriptions)]
        return [s for s in subs if recipient is None or s.recipient == recipient]


async def _values(kv: KeyValue) -> list[bytes]:
    """Every current value of ``kv``, by key."""
    found = await snapshot(kv)
    return [found[k] for k in sorted(found)]
