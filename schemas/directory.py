"""Recipients and subscriptions: who gets what, on which channel, when.

Both live in JetStream KV (buckets ``recipients`` and ``subscriptions``); these are their
values. A subscription's id is derived from (recipient, pattern, channel), so subscribing
twice is one subscription.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, HttpUrl

from schemas.errors import InvalidInputError
from schemas.subjects import validate_pattern
from schemas.targets import Channel, EmailTarget, SlackTarget, Target, WebhookTarget
from schemas.text import Line, Token

_DIGEST_RE = re.compile(
    r"^(daily@(?P<dh>[01]\d|2[0-3]):(?P<dm>[0-5]\d)"
    r"|weekly@(?P<wd>mon|tue|wed|thu|fri|sat|sun)-(?P<wh>[01]\d|2[0-3]):(?P<wm>[0-5]\d))$"
)


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    # available_timezones() walks the tz database: ~10 ms, once per process is enough
    return frozenset(available_timezones())


def check_timezone(value: str) -> str:
    """Return ``value`` if it names an IANA time zone."""
    if value in ("UTC", "Etc/UTC"):
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)"
        ) from None
    if value not in _zones():
        raise ValueError(f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)")
    return value


def check_digest(value: str) -> str:
    """Return ``value`` if it is ``daily@HH:MM`` or ``weekly@<day>-HH:MM``."""
    if not _DIGEST_RE.fullmatch(value):
        raise ValueError(f"digest schedule {value!r}: use daily@08:00 or weekly@mon-08:00")
    return value


TimeZone = Annotated[str, AfterValidator(check_timezone)]
DigestSchedule = Annotated[str, AfterValidator(check_digest)]


class Recipient(BaseModel):
    """A person or a shared channel that receives messages."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Token
    name: Line | None = None
    organisation: Line | None = None
    email: EmailStr | None = None
    slack_channel: Annotated[str, Field(pattern=r"^(#[a-z0-9_-]{1,80}|[A-Z0-9]{1,32})$")] | None = (
        None
    )
    webhook_url: HttpUrl | None = None
    timezone: TimeZone = "UTC"
    digest: DigestSchedule = "daily@08:00"
    locale: Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] = "en"
    paused_until: AwareDatetime | None = None
    disabled_channels: tuple[Channel, ...] = ()
    owner: Token | None = Field(
        None,
        description="recipient id of whoever looks after this recipient's contacts: told "
        "once by email when a target is disabled (default: the recipient's own email)",
    )
    created: AwareDatetime | None = Field(
        None,
        description="set by the hub when the recipient is first stored (absent on older "
        "records); personal links carry it, so a link outlives no deletion",
    )

    def target(self, channel: Channel) -> Target:
        """The recipient's target on ``channel``.

        Raises:
            InvalidInputError: the recipient has no contact for that channel.
        """
        # The recipient's fields were validated by the same rules as the targets' (EmailStr
        # and Email both keep email-validator's normalised address): no second validation,
        # which for an address not seen before costs tens of microseconds.
        if channel == "email" and self.email:
            return EmailTarget.model_construct(address=self.email, name=self.name)
        if channel == "slack" and self.slack_channel:
            return SlackTarget.model_construct(conversation=self.slack_channel)
        if channel == "webhook" and self.webhook_url:
            return WebhookTarget(url=self.webhook_url)
        option = {"email": "--email", "slack": "--slack-channel", "webhook": "--webhook-url"}[
            channel
        ]
        raise InvalidInputError(
            f"recipient {self.id!r} has no {channel} contact: add one with {option}"
        )

    def is_paused(self, now: datetime) -> bool:
        """Whether the recipient paused everything at ``now``."""
        return self.paused_until is not None and now < self.paused_until


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def version_of(created: datetime | str | None) -> str | None:
    """The version personal links carry: the creation time in whole microseconds.

    Accepts the stored ISO string too (the router reads raw KV values), so both sides
    compute the same version. ``None`` for records from before versions.
    """
    if created is None:
        return None
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    return str((created - _EPOCH) // timedelta(microseconds=1))


def _pattern(value: str) -> str:
    return validate_pattern(value)


class Subscription(BaseModel):
    """A recipient's interest in a subject pattern, on one channel."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    recipient: Token
    pattern: Annotated[str, Field(max_length=200), AfterValidator(_pattern)]
    channel: Channel
    mode: Literal["immediate", "digest"] = "immediate"
    created_at: AwareDatetime

    @staticmethod
    def make_id(recipient: str, pattern: str, channel: str) -> str:
        """The deterministic id of (recipient, pattern, channel)."""
        digest = hashlib.sha256(f"{recipient}\x00{pattern}\x00{channel}".encode()).hexdigest()
        return f"{recipient}-{digest[:12]}"
