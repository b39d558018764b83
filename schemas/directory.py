"""Recipients and subscriptions: who gets what, on which channel, when.

Both live in JetStream KV (buckets ``recipients`` and ``subscriptions``); these are their
values. A subscription's id is derived from (recipient, pattern, channel), so subscribing
twice is one subscription.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    ValidationInfo,
)

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


# Legacy tz database names that are fixed offsets or US/EU rule sets rather than places:
# someone who types EST means New York, and EST would keep them on winter time all summer.
FIXED_OFFSET_ZONES: Final[Mapping[str, str]] = {
    "EST": "America/New_York",
    "MST": "America/Denver",
    "HST": "Pacific/Honolulu",
    "EST5EDT": "America/New_York",
    "CST6CDT": "America/Chicago",
    "MST7MDT": "America/Denver",
    "PST8PDT": "America/Los_Angeles",
    "CET": "Europe/Paris",
    "EET": "Europe/Athens",
    "MET": "Europe/Brussels",
    "WET": "Europe/Lisbon",
}
# Abbreviations people write that are no tz database name at all.
ABBREVIATIONS: Final[Mapping[str, str]] = {
    "EDT": "America/New_York",
    "CST": "America/Chicago",
    "CDT": "America/Chicago",
    "MDT": "America/Denver",
    "PST": "America/Los_Angeles",
    "PDT": "America/Los_Angeles",
    "AKST": "America/Anchorage",
    "BST": "Europe/London",
    "CEST": "Europe/Paris",
    "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo",
    "AEST": "Australia/Sydney",
}
# Cities people expect to find that the tz database files under another city of the zone.
CITY_ALIASES: Final[Mapping[str, str]] = {
    "America/Boston": "America/New_York",
    "America/Washington": "America/New_York",
    "America/Philadelphia": "America/New_York",
    "America/Atlanta": "America/New_York",
    "America/Miami": "America/New_York",
    "America/Dallas": "America/Chicago",
    "America/Houston": "America/Chicago",
    "America/San_Francisco": "America/Los_Angeles",
    "America/Seattle": "America/Los_Angeles",
    "America/Portland": "America/Los_Angeles",
    "Europe/Munich": "Europe/Berlin",
    "Europe/Frankfurt": "Europe/Berlin",
    "Europe/Hamburg": "Europe/Berlin",
    "Europe/Barcelona": "Europe/Madrid",
    "Europe/Milan": "Europe/Rome",
    "Asia/Mumbai": "Asia/Kolkata",
    "Asia/Delhi": "Asia/Kolkata",
    "Asia/New_Delhi": "Asia/Kolkata",
    "Asia/Beijing": "Asia/Shanghai",
    "Australia/Canberra": "Australia/Sydney",
}


def _known_zone(value: str) -> bool:
    if value not in _zones():
        return False
    try:
        ZoneInfo(value)
    # OSError: a name that is a directory of the tz database ("America") or too long a path
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def suggest_timezones(value: str, limit: int = 3) -> list[str]:
    """IANA zone names close to ``value``, best first (empty if nothing is close).

    Fixed-offset names and abbreviations map to the usual zone of their region, cities
    the tz database files elsewhere to their zone (``America/Boston`` ->
    ``America/New_York``), letter case is ignored, and typos are matched by similarity
    over the tz database names and those cities.
    """
    key = value.strip()
    for table in (FIXED_OFFSET_ZONES, ABBREVIATIONS):
        if key.upper() in table:
            return [table[key.upper()]]
    by_folded = {name.casefold(): name for name in (*_zones(), *CITY_ALIASES)}
    exact = by_folded.get(key.casefold())
    if exact is not None:
        return [CITY_ALIASES.get(exact, exact)]
    close = difflib.get_close_matches(key, [*_zones(), *CITY_ALIASES], n=limit * 2, cutoff=0.75)
    if not close:
        return []
    # Only names about as close as the best one: "America/Bostn" is Boston, not Boise.
    best = difflib.SequenceMatcher(None, key, close[0]).ratio()
    close = [n for n in close if difflib.SequenceMatcher(None, key, n).ratio() >= best - 0.02]
    found: list[str] = []
    for name in close:
        zone = CITY_ALIASES.get(name, name)
        if zone not in found and zone not in FIXED_OFFSET_ZONES:
            found.append(zone)
    return found[:limit]


def check_timezone(value: str) -> str:
    """Return ``value`` if it names a place's IANA time zone (``UTC`` included).

    Raises:
        ValueError: an unknown name, or a fixed-offset legacy name such as ``EST``; the
            message suggests the zone meant.
    """
    if value in FIXED_OFFSET_ZONES:
        raise ValueError(
            f"time zone {value!r} is a fixed offset that ignores daylight saving time: "
            f"use a place's zone, e.g. {FIXED_OFFSET_ZONES[value]}"
        )
    if value in ("UTC", "Etc/UTC") or _known_zone(value):
        return value
    hint = suggest_timezones(value)
    tail = f"did you mean {' or '.join(hint)}?" if hint else "use an IANA name like Europe/Berlin"
    raise ValueError(f"unknown time zone {value!r}: {tail}")


def _timezone_on_input(value: str, info: ValidationInfo) -> str:
    # Stored recipients are read from JSON (KV values); they stay loadable even when they
    # hold a name input no longer accepts (EST). Everything a user or system sends in comes
    # through Python-mode validation (CLI, HTTP API, web forms) and gets the strict check.
    if info.mode == "json":
        if value in ("UTC", "Etc/UTC") or _known_zone(value):
            return value
        raise ValueError(f"unknown time zone {value!r}")
    return check_timezone(value)


def check_digest(value: str) -> str:
    """Return ``value`` if it is ``daily@HH:MM`` or ``weekly@<day>-HH:MM``."""
    if not _DIGEST_RE.fullmatch(value):
        raise ValueError(f"digest schedule {value!r}: use daily@08:00 or weekly@mon-08:00")
    return value


TimeZone = Annotated[str, AfterValidator(_timezone_on_input)]
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
