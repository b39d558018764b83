"""Who may change a recipient: one pure decision, tested as a table.

Recipients are shared by the whole partnership: one person may follow several
initiatives, each run by its own backbone. A backbone token therefore changes a
recipient's own fields (contacts, pause, channels, schedule) or deletes them only when
*every* subscription of that recipient is on one of the token's initiatives, or the
recipient is new or follows nothing yet; otherwise one backbone could redirect or silence
what another initiative sends. Adding or removing a subscription on one of its own
initiatives is always allowed. Whatever is refused can be done by an admin, or by the
recipient in their preference centre.

A subscription's initiative is the second token of its pattern (``impact.<initiative>.…``);
a pattern with a wildcard there (``impact.*.milestone.>``, ``impact.>``) spans every
initiative and so is outside every backbone's.

A backbone token *reads* a recipient (their contacts) when the recipient follows at least
one of its initiatives, or nothing yet (so it can set up a newcomer): the partners of one
initiative are not a directory of every other initiative's people.

Partners change their own recipient's contacts and pause, never who is told about them
(``owner``) nor what the hub disabled after a permanent failure (``disabled_channels``),
and never delete it; system tokens have no directory access.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final

from schemas.subjects import EVENTS_ROOT, validate_pattern
from services.directory.auth import PermissionDeniedError, Principal

PARTNER_FIXED: Final = frozenset({"owner", "disabled_channels"})
"""Recipient fields a partner may not change on its own recipient."""

_WORDS: Final = {
    "email": "email address",
    "slack_channel": "Slack channel",
    "webhook_url": "webhook URL",
    "paused_until": "pause",
    "disabled_channels": "disabled channels",
    "digest": "digest schedule",
    "timezone": "time zone",
}


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request is allowed and, when it is not, why in plain words."""

    allowed: bool
    reason: str = ""

    def enforce(self) -> None:
        """Raise when refused.

        Raises:
            PermissionDeniedError: the decision is a refusal (its message is the reason).
        """
        if not self.allowed:
            raise PermissionDeniedError(self.reason)


ALLOW: Final = Decision(True)


def pattern_initiative(pattern: str) -> str | None:
    """The initiative a subscription pattern is on, or ``None`` when it spans several.

    Raises:
        InvalidSubjectError: ``pattern`` is malformed.
    """
    parts = validate_pattern(pattern).split(".")
    if parts[0] != EVENTS_ROOT or len(parts) < 2 or parts[1] in ("*", ">"):
        return None
    return parts[1]


def foreign_initiatives(caller: Principal, patterns: Iterable[str]) -> list[str]:
    """What of ``patterns`` lies outside the caller's initiatives, in words, sorted.

    An initiative's name for a pattern on one initiative; the pattern itself (quoted) for
    one that spans every initiative.
    """
    found: set[str] = set()
    for pattern in patterns:
        initiative = pattern_initiative(pattern)
        if initiative is None:
            found.add(f"every initiative ({pattern!r})")
        elif not caller.in_scope(initiative):
            found.add(initiative)
    return sorted(found)


def _fields_in_words(fields: Collection[str]) -> str:
    return ", ".join(sorted(_WORDS.get(f, f.replace("_", " ")) for f in fields))


def recipient_change(
    caller: Principal,
    recipient_id: str,
    subscribed: Iterable[str] | None,
    changed: Collection[str],
) -> Decision:
    """May ``caller`` create or change the recipient ``recipient_id``?

    Args:
        caller: the token making the request.
        recipient_id: the recipient to create or change.
        subscribed: the patterns of the recipient's subscriptions; ``None`` when the
            recipient does not exist yet.
        changed: the names of the fields the request changes (empty: it changes nothing).
    """
    if caller.role == "admin":
        return ALLOW
    if caller.role == "system":
        return Decision(False, f"a system token may not change recipients ({recipient_id!r})")
    if caller.role == "partner":
        return _partner_change(caller, recipient_id, changed)
    if subscribed is None or not changed:
        return ALLOW  # new, or a replacement that changes nothing
    foreign = foreign_initiatives(caller, subscribed)
    if not foreign:
        return ALLOW
    return Decision(
        False,
        f"recipient {recipient_id!r} follows {', '.join(foreign)}, which this token "
        f"does not manage, so it may not change their {_fields_in_words(changed)}: an "
        f"admin can, or the recipient in their preference centre",
    )


def _partner_change(caller: Principal, recipient_id: str, changed: Collection[str]) -> Decision:
    if recipient_id != caller.recipient:
        return Decision(
            False, f"a partner token may change only its own recipient, not {recipient_id!r}"
        )
    fixed = PARTNER_FIXED & set(changed)
    if fixed:
        return Decision(
            False,
            f"a partner token may not change the {_fields_in_words(fixed)} of "
            f"{recipient_id!r}: ask the initiative's backbone team",
        )
    return ALLOW


def recipient_deletion(caller: Principal, recipient_id: str, subscribed: Iterable[str]) -> Decision:
    """May ``caller`` delete the (existing) recipient ``recipient_id`` with all they follow?"""
    if caller.role == "admin":
        return ALLOW
    if caller.role != "backbone":
        return Decision(False, f"a {caller.role} token may not delete recipients")
    foreign = foreign_initiatives(caller, subscribed)
    if not foreign:
        return ALLOW
    return Decision(
        False,
        f"recipient {recipient_id!r} follows {', '.join(foreign)}, which this token "
        f"does not manage, so it may not delete them: an admin can, or this token can "
        f"remove the subscriptions on its own initiatives",
    )


def subscription_added(caller: Principal, recipient_id: str, pattern: str) -> Decision:
    """May ``caller`` subscribe ``recipient_id`` to ``pattern``?

    Raises:
        InvalidSubjectError: ``pattern`` is malformed.
    """
    if caller.may_subscribe(recipient_id, pattern):
        return ALLOW
    if caller.role == "system":
        return Decision(False, "a system token may not manage subscriptions")
    if caller.role == "partner" and recipient_id != caller.recipient:
        return Decision(
            False, f"a partner token may subscribe only its own recipient, not {recipient_id!r}"
        )
    return Decision(
        False,
        f"this token may subscribe recipients only to its own initiatives "
        f"({', '.join(sorted(caller.initiatives))}), not to {pattern!r}",
    )


def subscription_removed(caller: Principal, recipient_id: str, pattern: str) -> Decision:
    """May ``caller`` remove ``recipient_id``'s subscription to ``pattern``?"""
    if caller.may_see_subscription(recipient_id, pattern):
        return ALLOW
    if caller.role == "system":
        return Decision(False, "a system token may not manage subscriptions")
    if caller.role == "partner":
        return Decision(
            False,
            f"a partner token may remove only its own recipient's "
            f"subscriptions, not {recipient_id!r}'s",
        )
    return Decision(
        False,
        f"this token may remove subscriptions only on its own initiatives "
        f"({', '.join(sorted(caller.initiatives))}), not {pattern!r}",
    )


def recipient_reading(caller: Principal, recipient_id: str, subscribed: Iterable[str]) -> Decision:
    """May ``caller`` read the recipient ``recipient_id``, who follows ``subscribed``?"""
    if caller.role in ("system", "partner"):
        if caller.role == "partner" and recipient_id == caller.recipient:
            return ALLOW
        return Decision(False, f"a {caller.role} token may not read recipient {recipient_id!r}")
    patterns = list(subscribed)
    ours = (i for i in map(pattern_initiative, patterns) if i is not None)
    if caller.role == "admin" or not patterns or any(caller.in_scope(i) for i in ours):
        return ALLOW
    foreign = ", ".join(foreign_initiatives(caller, patterns))
    return Decision(
        False,
        f"recipient {recipient_id!r} follows only {foreign}, which this token does not manage",
    )
