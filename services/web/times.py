"""Times as the pages show them: local to a reader, with the zone named.

One form everywhere, the same as the digest's header: ``12 Jan 2027, 15:00
(America/New_York)``. The zone is named by its IANA name, the one the reader picked in
the preference centre (abbreviations are ambiguous, and many zones have only ``+03``).

A recipient's own pages (preference centre, unsubscribe) use the recipient's zone; the
shared pages (initiative page, post preview, outbox, feed entries) use the hub's,
``IMPACTBUS_TIMEZONE`` (:attr:`services.config.HubSettings.zone`).
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

from schemas.bounds import UNSHOWN, in_zone

FORMAT = "%d %b %Y, %H:%M"


def zone_name(tz: tzinfo) -> str:
    """The IANA name of ``tz`` (``UTC`` for :data:`datetime.UTC`)."""
    return tz.key if isinstance(tz, ZoneInfo) else (tz.tzname(None) or "UTC")


def local_time(moment: datetime, tz: tzinfo = UTC) -> str:
    """``moment`` in ``tz``: ``12 Jan 2027, 15:00 (America/New_York)``.

    Args:
        moment: an aware datetime (a naive one is taken as UTC, as the schemas store it).
        tz: the reader's zone; where ``moment`` has no time in it (the edges of the
            calendar), the time is shown in UTC, and says so; an en dash where it has
            none there either.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = in_zone(moment, tz)
    if local is None:  # the first or last hours of year 1 / 9999 have no local time
        local, tz = in_zone(moment, UTC), UTC
    if local is None:
        return UNSHOWN
    return f"{local.strftime(FORMAT)} ({zone_name(tz)})"
