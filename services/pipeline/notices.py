"""Disabling a target that refused for good, and the notice telling its owner.

:func:`disable_target` adds the channel to the recipient's ``disabled_channels`` with a
compare-and-set on the ``recipients`` KV entry: of many workers failing on the same
target at once, exactly one sees its update win, and only that one tells the owner.

:func:`owner_notice` (pure) builds that email :class:`~schemas.delivery.Delivery`; the
delivery worker queues it on ``deliver.email.<initiative>`` like any other job. The notice
is an ``update`` event synthesised by the hub (initiative of the failing event, topic
``delivery-disabled``) that is *not* published on ``impact.>``: it concerns one owner,
not the initiative's subscribers. Its id names the recipient, the channel and the KV
revision of the disabling, so one disabling gives exactly one job id (a retried publish
is dropped by the duplicate window) and a later disabling, after a re-enable, a new one.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Final

from pydantic import ValidationError

from schemas.delivery import Delivery
from schemas.directory import Recipient
from schemas.errors import ConflictError, InvalidInputError, NotFoundError
from schemas.events import new_event
from schemas.targets import EmailTarget
from services.bus.kv import Kv

log = logging.getLogger("impactbus.notices")

NOTICE_TOPIC: Final = "delivery-disabled"
NOTICE_SOURCE: Final = "urn:impactbus:hub"
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


async def disable_target(recipients: Kv, failed: Delivery) -> tuple[Recipient, int] | None:
    """Disable the channel of ``failed``'s target for its recipient, unless it already is.

    Nothing changes when the recipient is gone, the channel is already disabled, or the
    recipient's contact on it is no longer the target that failed (it was replaced since
    the job was queued).

    Returns:
        The recipient as it was before, and the KV revision that disabled the channel;
        ``None`` when this call did not disable it.
    """
    channel = failed.target.channel
    for _ in range(10):  # compare-and-set: retry when another change came first
        try:
            entry = await recipients.get(failed.recipient)
        except NotFoundError:
            return None
        assert entry.value is not None
        recipient = Recipient.model_validate_json(entry.value)
        if channel in recipient.disabled_channels:
            return None
        try:
            if recipient.target(channel).key != failed.target.key:
                return None
        except InvalidInputError:
            return None
        updated = recipient.model_copy(
            update={"disabled_channels": (*recipient.disabled_channels, channel)}
        )
        try:
            revision = await recipients.update(
                recipient.id, updated.model_dump_json().encode(), last=entry.revision
            )
        except ConflictError:
            continue
        return recipient, revision
    return None


async def owner_of(recipients: Kv, recipient: Recipient) -> Recipient:
    """The recipient named as ``recipient``'s owner, or ``recipient`` itself."""
    if not recipient.owner or recipient.owner == recipient.id:
        return recipient
    try:
        entry = await recipients.get(recipient.owner)
        assert entry.value is not None
        return Recipient.model_validate_json(entry.value)
    except (NotFoundError, ValidationError):
        log.warning("no owner %r for %s: telling the recipient", recipient.owner, recipient.id)
        return recipient


def owner_notice(
    recipient: Recipient,
    owner: Recipient,
    failed: Delivery,
    *,
    reason: str,
    error: str,
    revision: int,
    now: datetime | None = None,
) -> Delivery | None:
    """The email telling ``owner`` that ``recipient``'s target on a channel was disabled.

    Args:
        recipient: the recipient whose target was disabled (as before the change).
        owner: who to tell: the recipient's ``owner``, or the recipient itself.
        failed: the delivery that failed permanently.
        reason: the error's short reason (``gone``, ``rejected``...).
        error: the error's message.
        revision: the ``recipients`` KV revision that disabled the target.
        now: the event's time (default: now).

    Returns:
        The delivery, or ``None`` when ``owner`` has no usable email address.
    """
    mailable = [r for r in (owner, recipient) if r.email and "email" not in r.disabled_channels]
    if not mailable:
        return None
    owner = mailable[0]  # a named owner who cannot be mailed: the recipient itself
    assert owner.email is not None
    channel = failed.target.channel
    who = recipient.name or recipient.id
    detail = _CONTROL.sub(" ", error)[:500]
    body = (
        f"impactbus stopped sending {channel} messages to {who} ({recipient.id}): the "
        f"target {failed.target.key} refused permanently.\n\n"
        f"Error ({reason}): {detail}\n"
        f"It happened delivering event {failed.event.id} "
        f"({failed.event.initiative}/{failed.event.kind}/{failed.event.topic}).\n\n"
        f"Messages that could not be sent are kept as dead letters:\n"
        f"  impactbus dead list --reason {reason}\n\n"
        f"Once the {channel} target works again (or has been replaced), turn it back on "
        f"and resend what failed:\n"
        f"  impactbus recipients enable {recipient.id} {channel}\n"
        f"  impactbus dead replay --all --reason {reason}\n"
    )
    title = f"Stopped sending {channel} messages to {who}"
    event = new_event(
        "update",
        failed.event.initiative,
        NOTICE_TOPIC,
        {"title": title[:200], "body": body},
        source=NOTICE_SOURCE,
        event_id=f"{NOTICE_TOPIC}.{recipient.id}.{channel}.{revision}",
        time=now,
    )
    return Delivery(
        event=event,
        recipient=owner.id,
        recipient_name=owner.name,
        target=EmailTarget(address=owner.email, name=owner.name),
        timezone=owner.timezone,
        locale=owner.locale,
    )
