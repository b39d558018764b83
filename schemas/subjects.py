"""Subjects: the only place impactbus forms or parses a NATS subject.

Subjects (see DESIGN.md)::

    impact.<initiative>.<kind>.<topic>   an event
    deliver.<channel>.<initiative>       one delivery job
    digest.<recipient>                   an item waiting for a recipient's next digest
    digest-tick.<recipient>              the server-scheduled tick that triggers a digest
    dead.<reason>.<initiative>           a dead letter

Tokens follow the NATS rules, narrowed for safety: lowercase ``[a-z0-9_-]``, 1 to 64
characters. Publish subjects never contain wildcards; subscription patterns may use ``*``
(exactly one token) and ``>`` (one or more trailing tokens).
"""

from __future__ import annotations

import re
from typing import Final, Literal, NamedTuple

from schemas.errors import InvalidSubjectError

EventKind = Literal["metric", "milestone", "meeting", "update"]
EVENT_KINDS: Final[tuple[EventKind, ...]] = ("metric", "milestone", "meeting", "update")

TOKEN_MAX: Final = 64
TOKEN_RE: Final = re.compile(r"[a-z0-9_-]{1,64}")
EVENTS_ROOT: Final = "impact"
DELIVER_ROOT: Final = "deliver"
DIGEST_ROOT: Final = "digest"
TICK_ROOT: Final = "digest-tick"
DEAD_ROOT: Final = "dead"


def validate_token(value: str, what: str = "token") -> str:
    """Return ``value`` if it is a valid subject token.

    Args:
        value: the token, e.g. an initiative id or topic.
        what: how to name the token in the error message.

    Raises:
        InvalidSubjectError: the token is empty, too long, or has a character outside
            ``[a-z0-9_-]`` (a dot, a space, a wildcard, an upper-case letter...).
    """
    if TOKEN_RE.fullmatch(value):
        return value
    if not value:
        raise InvalidSubjectError(f"{what} must not be empty")
    if len(value) > TOKEN_MAX:
        raise InvalidSubjectError(f"{what} is longer than {TOKEN_MAX} characters")
    bad = next(c for c in value if not TOKEN_RE.fullmatch(c))
    raise InvalidSubjectError(
        f"{what} {value!r} has {bad!r}: use lowercase letters, digits, '-' and '_' only"
    )


class EventSubject(NamedTuple):
    """The parts of ``impact.<initiative>.<kind>.<topic>``."""

    initiative: str
    kind: EventKind
    topic: str

    def __str__(self) -> str:
        return f"{EVENTS_ROOT}.{self.initiative}.{self.kind}.{self.topic}"


def event_subject(initiative: str, kind: str, topic: str) -> str:
    """Build the subject an event is published on.

    Raises:
        InvalidSubjectError: a token is invalid or the kind is unknown.
    """
    return str(
        EventSubject(
            validate_token(initiative, "initiative"), _kind(kind), validate_token(topic, "topic")
        )
    )


def parse_event_subject(subject: str) -> EventSubject:
    """Split an event subject into its parts.

    Raises:
        InvalidSubjectError: not of the form ``impact.<initiative>.<kind>.<topic>``.
    """
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != EVENTS_ROOT:
        raise InvalidSubjectError(
            f"{subject!r} is not an event subject (impact.<initiative>.<kind>.<topic>)"
        )
    _, initiative, kind, topic = parts
    return EventSubject(
        validate_token(initiative, "initiative"), _kind(kind), validate_token(topic, "topic")
    )


def _kind(kind: str) -> EventKind:
    for known in EVENT_KINDS:
        if kind == known:
            return known
    raise InvalidSubjectError(f"unknown kind {kind!r}: use one of {', '.join(EVENT_KINDS)}")


def delivery_subject(channel: str, initiative: str) -> str:
    """Subject of a delivery job for ``channel`` about an event of ``initiative``."""
    channel = validate_token(channel, "channel")
    return f"{DELIVER_ROOT}.{channel}.{validate_token(initiative, 'initiative')}"


def delivery_filter(channel: str) -> str:
    """The filter subject a channel's delivery workers consume."""
    return f"{DELIVER_ROOT}.{validate_token(channel, 'channel')}.>"


def digest_subject(recipient: str) -> str:
    """Subject of an item waiting for ``recipient``'s next digest."""
    return f"{DIGEST_ROOT}.{validate_token(recipient, 'recipient')}"


def tick_subject(recipient: str) -> str:
    """Subject the server publishes ``recipient``'s digest tick on."""
    return f"{TICK_ROOT}.{validate_token(recipient, 'recipient')}"


def dead_subject(reason: str, initiative: str) -> str:
    """Subject of a dead letter."""
    return (
        f"{DEAD_ROOT}.{validate_token(reason, 'reason')}.{validate_token(initiative, 'initiative')}"
    )


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid subscription pattern on event subjects.

    A pattern starts with ``impact``; every other token is a valid token, ``*`` or, last
    only, ``>``. It may not be longer than an event subject.

    Raises:
        InvalidSubjectError: the pattern is malformed.
    """
    parts = pattern.split(".")
    if parts[0] != EVENTS_ROOT:
        raise InvalidSubjectError(
            f"pattern {pattern!r} must start with '{EVENTS_ROOT}.', e.g. 'impact.somerville.>'"
        )
    if len(parts) < 2:
        raise InvalidSubjectError(f"pattern {pattern!r} needs at least one token after 'impact'")
    if len(parts) > 4:
        raise InvalidSubjectError(
            f"pattern {pattern!r} has more tokens than impact.<initiative>.<kind>.<topic>"
        )
    for i, token in enumerate(parts[1:], start=1):
        if token == ">":
            if i != len(parts) - 1:
                raise InvalidSubjectError(f"pattern {pattern!r}: '>' may only be the last token")
        elif token == "*":
            continue
        elif i == 2:
            _kind(token)
        else:
            validate_token(token, "pattern token")
    return pattern


def is_wildcard(subject: str) -> bool:
    """Whether ``subject`` contains a NATS wildcard token."""
    return any(t in ("*", ">") for t in subject.split("."))


def matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` matches the NATS wildcard ``pattern``."""
    p = pattern.split(".")
    s = subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


LOG_ROOT: Final = "log"
OUTBOX_ROOT: Final = "outbox"


def log_subject(event_id: str) -> str:
    """Subject of an event's delivery-log records (keyed by a hash of the event id)."""
    import hashlib

    return f"{LOG_ROOT}.{hashlib.sha256(event_id.encode()).hexdigest()[:40]}"


def outbox_subject(channel: str) -> str:
    """Subject the dev outbox records a channel's messages on."""
    return f"{OUTBOX_ROOT}.{validate_token(channel, 'channel')}"
