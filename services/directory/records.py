"""Recipients and subscriptions, kept in JetStream KV.

The CLI, the HTTP API and the web pages all change the directory through this module, so
each rule holds everywhere: a subscription needs a recipient with a contact on its
channel, a contact that subscriptions use is removed only when asked to stop them too,
adding a recipient never replaces one, ids are derived, deleting a recipient deletes
their subscriptions.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal, TypeVar

from pydantic import ValidationError

from schemas.directory import Recipient, Subscription
from schemas.errors import ConflictError, ImpactbusError, InvalidInputError, NotFoundError
from schemas.events import describe, invalid_fields
from schemas.subjects import validate_token
from schemas.targets import Channel
from services.bus import KV_RECIPIENTS, KV_SUBSCRIPTIONS, Bus
from services.bus.kv import Kv, open_kv
from services.bus.watch import snapshot

log = logging.getLogger("impactbus.directory")


class UnreadableRecordError(ImpactbusError):
    """A stored recipient or subscription no longer passes the schema (HTTP 409).

    Written by an older hub or straight to NATS: it can be replaced or deleted, and
    listings skip it with a warning rather than fail as a whole.
    """


CONTACTS: Final[Mapping[str, Channel]] = {
    "email": "email",
    "slack_channel": "slack",
    "webhook_url": "webhook",
}
"""Recipient field -> the channel it is the contact of."""

CONTACT_WORDS: Final[Mapping[Channel, tuple[str, str]]] = {
    "email": ("email address", "--email maria@school.example"),
    "slack": ("Slack channel", "--slack-channel C123"),
    "webhook": ("webhook URL", "--webhook-url https://example.org/hook"),
}
"""Channel -> (its contact in words, an example of the CLI option that sets it)."""

_CAS_ATTEMPTS: Final = 5


class RecipientExistsError(InvalidInputError):
    """A new recipient whose id is taken (change it with an update instead)."""

    def __init__(self, recipient_id: str) -> None:
        super().__init__(
            f"recipient {recipient_id!r} already exists: change their contacts with "
            f"`impactbus recipients update {recipient_id} ...`"
        )
        self.recipient_id = recipient_id


class MissingContactError(InvalidInputError):
    """A subscription on a channel the recipient has no contact for."""

    def __init__(self, recipient_id: str, channel: Channel) -> None:
        what, option = CONTACT_WORDS[channel]
        super().__init__(
            f"recipient {recipient_id!r} has no {what} for a {channel} subscription: add "
            f"one first with `impactbus recipients update {recipient_id} {option}`"
        )
        self.recipient_id = recipient_id
        self.channel = channel


class ContactInUseError(InvalidInputError):
    """Removing a contact that subscriptions deliver to, without asking to stop them."""

    def __init__(self, recipient_id: str, used: list[Subscription]) -> None:
        channels = sorted({s.channel for s in used})
        listed = ", ".join(f"{s.pattern} via {s.channel} ({s.id})" for s in used)
        super().__init__(
            f"removing the {' and '.join(CONTACT_WORDS[c][0] for c in channels)} of "
            f"{recipient_id!r} would stop {len(used)} subscription"
            f"{'s' if len(used) != 1 else ''}: {listed}; repeat with --force to remove "
            "the contact and those subscriptions"
        )
        self.recipient_id = recipient_id
        self.used = used


@dataclass
class RecipientUpdate:
    """What :meth:`Directory.update_recipient` did.

    Attributes:
        recipient: the recipient as stored now.
        changed: the fields whose value changed.
        stopped: subscriptions deleted because their contact was removed (``force``).
    """

    recipient: Recipient
    changed: list[str] = field(default_factory=list)
    stopped: list[Subscription] = field(default_factory=list)


class Directory:
    """CRUD over the ``recipients`` and ``subscriptions`` buckets."""

    def __init__(self, recipients: Kv, subscriptions: Kv) -> None:
        self.recipients = recipients
        self.subscriptions = subscriptions

    @classmethod
    async def open(cls, bus: Bus) -> Directory:
        """The directory of the hub behind ``bus``."""
        return cls(await open_kv(bus, KV_RECIPIENTS), await open_kv(bus, KV_SUBSCRIPTIONS))

    # ------------------------------------------------------------------ recipients

    async def put_recipient(self, recipient: Recipient) -> Recipient:
        """Create or replace a recipient.

        A recipient without ``created`` keeps the stored one's, or gets the time now when
        there is none: a deleted recipient created again is a new version, whose old
        personal links no longer work.

        Raises:
            InvalidInputError: the recipient as stored would not read back.
        """
        if recipient.created is None:
            try:
                stored = await self.get_recipient(recipient.id)
            except (NotFoundError, UnreadableRecordError):  # replacing an unreadable one
                stored = None
            created = stored.created if stored and stored.created else datetime.now(UTC)
            recipient = recipient.model_copy(update={"created": created})
        await self.recipients.put(recipient.id, _stored(recipient))
        return recipient

    async def add_recipient(self, **fields: object) -> Recipient:
        """Validate ``fields`` into a recipient and store it, replacing one with its id.

        Raises:
            InvalidInputError: a field is invalid (the message names it).
        """
        return await self.put_recipient(_new_recipient(fields))

    async def create_recipient(self, **fields: object) -> Recipient:
        """Validate ``fields`` into a new recipient and store it; never replace one.

        Raises:
            RecipientExistsError: a recipient with that id exists.
            InvalidInputError: a field is invalid (the message names it).
        """
        recipient = _new_recipient(fields)
        if recipient.created is None:
            recipient = recipient.model_copy(update={"created": datetime.now(UTC)})
        try:
            await self.recipients.create(recipient.id, _stored(recipient))
        except ConflictError:
            raise RecipientExistsError(recipient.id) from None
        return recipient

    async def update_recipient(
        self, recipient_id: str, changes: Mapping[str, object], *, force: bool = False
    ) -> RecipientUpdate:
        """Merge ``changes`` into a stored recipient (a JSON merge patch, RFC 7396).

        Fields not in ``changes`` keep their value; a ``None`` value removes the field
        (back to its default). Removing a contact that subscriptions deliver to is refused
        unless ``force``, which deletes those subscriptions too. The write is a
        compare-and-set, so a change made meanwhile by someone else is never overwritten.

        Raises:
            NotFoundError: no such recipient.
            InvalidInputError: a changed field is invalid, or ``changes`` has an ``id``
                other than ``recipient_id``.
            ContactInUseError: a removed contact is in use and ``force`` is not set.
        """
        validate_token(recipient_id, "recipient id")
        if changes.get("id", recipient_id) != recipient_id:
            raise InvalidInputError(f"id: cannot be changed (it is {recipient_id!r})")
        given = {k: v for k, v in changes.items() if v is not None}
        # The changed values are input: check them as such (a stored value that input no
        # longer accepts, like an old time zone name, must not block other changes).
        try:
            Recipient.model_validate({**given, "id": recipient_id})
        except ValidationError as exc:
            raise invalid_fields(exc) from None
        for _ in range(_CAS_ATTEMPTS):
            current, revision = await self._recipient_entry(recipient_id)
            merged = {**current.model_dump(mode="json"), **changes, "id": recipient_id}
            try:
                updated = Recipient.model_validate_json(json.dumps(merged, default=str))
            except ValidationError as exc:
                raise invalid_fields(exc) from None
            removed = {
                channel
                for name, channel in CONTACTS.items()
                if getattr(current, name) and not getattr(updated, name)
            }
            used = [
                sub
                for sub in await self.list_subscriptions(recipient=recipient_id)
                if sub.channel in removed
            ]
            if used and not force:
                raise ContactInUseError(recipient_id, used)
            for sub in used:  # first, so no subscription is ever left without its contact
                await self.subscriptions.delete(sub.id)
            try:
                await self.recipients.update(recipient_id, _stored(updated), last=revision)
            except ConflictError:
                continue  # changed meanwhile: merge into the new value
            changed = [
                name
                for name in Recipient.model_fields
                if getattr(current, name) != getattr(updated, name)
            ]
            return RecipientUpdate(updated, changed, used)
        raise InvalidInputError(
            f"recipient {recipient_id!r} kept changing while being updated: try again"
        )

    async def _recipient_entry(self, recipient_id: str) -> tuple[Recipient, int]:
        try:
            entry = await self.recipients.get(recipient_id)
        except NotFoundError:
            raise NotFoundError(f"no recipient {recipient_id!r}") from None
        assert entry.value is not None
        assert entry.revision is not None
        return Recipient.model_validate_json(entry.value), entry.revision

    async def get_recipient(self, recipient_id: str) -> Recipient:
        """One recipient.

        Raises:
            NotFoundError: no such recipient.
        """
        validate_token(recipient_id, "recipient id")
        try:
            entry = await self.recipients.get(recipient_id)
        except NotFoundError:
            raise NotFoundError(f"no recipient {recipient_id!r}") from None
        return _stored_record(Recipient, f"recipient {recipient_id!r}", entry.value, True)

    async def list_recipients(self) -> list[Recipient]:
        """Every readable recipient, by id (an unreadable one is skipped with a warning)."""
        return _readable(Recipient, "recipient", await _items(self.recipients))

    async def delete_recipient(self, recipient_id: str) -> None:
        """Delete a recipient and all their subscriptions.

        Raises:
            NotFoundError: no such recipient.
        """
        with contextlib.suppress(UnreadableRecordError):  # unreadable: deleting repairs it
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
        try:
            # digest subscriptions too: a digest is delivered on the subscription's channel
            recipient.target(channel)
        except InvalidInputError:
            raise MissingContactError(recipient_id, channel) from None
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
            raise invalid_fields(exc) from None
        await self.subscriptions.put(sub.id, sub.model_dump_json().encode())
        return sub

    async def get_subscription(self, sub_id: str) -> Subscription:
        """One subscription.

        Raises:
            NotFoundError: no such subscription.
        """
        try:
            entry = await self.subscriptions.get(sub_id)
        except NotFoundError:  # an invalid key is not found either
            raise NotFoundError(f"no subscription {sub_id!r}") from None
        return _stored_record(Subscription, f"subscription {sub_id!r}", entry.value, False)

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
        subs = _readable(Subscription, "subscription", await _items(self.subscriptions))
        return [s for s in subs if recipient is None or s.recipient == recipient]


async def _items(kv: Kv) -> list[tuple[str, bytes]]:
    """Every current (key, value) of ``kv``, by key."""
    found = await snapshot(kv)
    return [(k, found[k]) for k in sorted(found)]


def _stored(recipient: Recipient) -> bytes:
    """The recipient's stored form, checked to read back.

    Raises:
        InvalidInputError: a value that validation normalises past a bound (e.g. a webhook
            URL whose percent-encoding makes it longer than URLs may be).
    """
    stored = recipient.model_dump_json().encode()
    try:
        Recipient.model_validate_json(stored)
    except ValidationError as exc:
        raise InvalidInputError(f"{describe(exc)} (once normalised)") from None
    return stored


def _new_recipient(fields: Mapping[str, object]) -> Recipient:
    validate_token(str(fields.get("id", "")), "recipient id")
    try:
        return Recipient.model_validate(dict(fields))
    except ValidationError as exc:
        raise invalid_fields(exc) from None


_M = TypeVar("_M", Recipient, Subscription)


def _stored_record(model: type[_M], what: str, value: bytes | None, repairable: bool) -> _M:
    """A stored record read back.

    Raises:
        UnreadableRecordError: it no longer passes the schema (the message says how to
            repair it when a replacement can).
    """
    assert value is not None
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        hint = ": replace it or delete it" if repairable else ""
        raise UnreadableRecordError(
            f"{what} is stored in a form this hub cannot read ({describe(exc)}){hint}"
        ) from None


def _readable(model: type[_M], what: str, items: list[tuple[str, bytes]]) -> list[_M]:
    """The values that pass ``model``; each other one is logged and skipped.

    One bad record must not take every listing down with it.
    """
    out: list[_M] = []
    for key, value in items:
        try:
            out.append(model.model_validate_json(value))
        except ValidationError as exc:
            log.warning(
                "skipping %s %r: stored in a form this hub cannot read (%s)",
                what,
                key,
                describe(exc),
            )
    return out
