"""How figures and times read, the same in every channel and on every page.

Email (text and HTML), Slack, webhook digests, the email and Slack digests and the web
pages all format numbers, units, progress, changes and times here, so one measure
reads the same wherever a partner sees it:

- numbers: ``1,234,567.89``, ``17.25``, ``0.0042``, ``-3`` (at most two decimals, but
  two significant digits below one, so a small share never reads as ``0``);
- units: ``17%`` (no space before a percent sign), ``12.5 kg``, ``40 children``;
- changes: ``+1.2``, ``-0.4``, ``0`` (always signed when not zero);
- progress: whole percent, **rounded down**, and ``100`` only when the target is reached:
  rounding would show ``100%`` at 99.6 % of the way, which tells a partnership it is
  done when it is not, and ``19%`` where the page's bar is at 18.6 %;
- times: ``12 Jan 2027, 15:00 (America/New_York)``, in the reader's zone, named by its
  IANA name (abbreviations are ambiguous, and many zones have only ``+03``).

What cannot be shown reads as :data:`~schemas.bounds.UNSHOWN` (an en dash) and never
raises: stored numbers beyond the bounds of new input (``1e308``), NaN and infinities,
shares that are no number, times with no value in a zone at the ends of the calendar.

Every function takes a ``locale`` (default ``"en"``): it chooses the digit grouping,
the decimal mark and the month names. Only English is written out so far; any other
locale reads as English until its table is added to ``_LOCALES``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Final, Literal
from zoneinfo import ZoneInfo

from schemas.bounds import UNSHOWN, in_zone, ratio, showable
from schemas.events import MetricUpdate

SMALLEST: Final = 1e-12
"""Magnitudes below this read as ``0`` (their digits would run past the bounds' scale)."""


@dataclass(frozen=True, slots=True)
class _Locale:
    group: str
    decimal: str
    months: tuple[str, ...]


_EN: Final = _Locale(
    group=",",
    decimal=".",
    months=("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
)
_LOCALES: Final = {"en": _EN}


def _locale(name: str) -> _Locale:
    return _LOCALES.get(name.split("-", maxsplit=1)[0].split("_", maxsplit=1)[0].casefold(), _EN)


def number(value: float, *, locale: str = "en") -> str:
    """``1234567.891`` -> ``1,234,567.89``; ``12.50`` -> ``12.5``; ``0.0042`` -> ``0.0042``.

    At most two decimals from one up; below one, two significant digits (a rate of
    ``0.0042`` is not ``0``). An en dash for what cannot be shown (``1e308``, NaN).
    """
    if not showable(value):
        return UNSHOWN
    if abs(value) < SMALLEST:
        return "0"
    if value.is_integer():
        text = f"{int(value):,}"
    elif abs(value) >= 1:
        text = f"{value:,.2f}".rstrip("0").rstrip(".")
    else:  # fixed notation: ``.2g`` alone would write 1e-05
        text = format(Decimal(f"{value:.2g}"), "f")
    text = "0" if text == "-0" else text
    loc = _locale(locale)
    if loc is _EN:
        return text
    return text.replace(",", "\0").replace(".", loc.decimal).replace("\0", loc.group)


def with_unit(value: float, unit: str | None, *, locale: str = "en") -> str:
    """A number and its unit: ``42%``, ``12.5 kg``, ``40 children``."""
    return _unit(number(value, locale=locale), unit)


def change(delta: float, unit: str | None = None, *, locale: str = "en") -> str:
    """A change, signed: ``+1.2``, ``-0.4 kg``, ``+13.33%``; ``0`` when it is none."""
    text = number(delta, locale=locale)
    signed = f"+{text}" if showable(delta) and text != "0" and delta > 0 else text
    return _unit(signed, unit)


def _unit(text: str, unit: str | None) -> str:
    if not unit:
        return text
    return f"{text}{unit}" if unit == "%" else f"{text} {unit}"


def progress(
    value: float,
    baseline: float | None,
    target: float | None,
    direction: Literal["increase", "decrease"] = "increase",
) -> int | None:
    """How far ``value`` has come from ``baseline`` to ``target``, in whole percent.

    Rounded down, 0 to 100, and 100 only once the target is reached (see the module
    docstring for why). Works for both directions of good: the sign of
    ``target - baseline`` carries it. When baseline and target are equal, there is no
    way to go: 100 when ``value`` is on the good side of the target (``direction``),
    else 0.

    Returns:
        ``None`` without both a baseline and a target, or when a stored figure is too
        large for the share to be a number (``1e308`` from ``-1e308``).
    """
    if baseline is None or target is None:
        return None
    span = target - baseline
    if not span:
        better = 1.0 if direction == "increase" else -1.0
        return 100 if (value - target) * better >= 0 else 0
    share = ratio(value - baseline, span)
    if share is None:
        return None
    if share >= 1:
        return 100
    # The epsilon keeps 0.29 * 100 == 28.999999999999996 at 29.
    return max(0, min(99, math.floor(share * 100 + 1e-9)))


def metric_progress(metric: MetricUpdate) -> int | None:
    """:func:`progress` of a metric update."""
    return progress(metric.value, metric.baseline, metric.target, metric.direction)


def bar(percent: int, width: int) -> str:
    """A text progress bar, ``[######----]``: ``width`` cells, filled rounding down."""
    filled = max(0, min(width, percent * width // 100))
    return f"[{'#' * filled}{'-' * (width - filled)}]"


def zone(name: str) -> tzinfo:
    """The time zone ``name``, or UTC if it is unknown."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        return UTC


def zone_name(tz: tzinfo) -> str:
    """The IANA name of ``tz`` (``UTC`` for :data:`datetime.UTC`)."""
    return tz.key if isinstance(tz, ZoneInfo) else (tz.tzname(None) or "UTC")


def local_time(moment: datetime, tz: tzinfo = UTC, *, locale: str = "en") -> str:
    """``moment`` in ``tz``: ``12 Jan 2027, 15:00 (America/New_York)``.

    Args:
        moment: an aware datetime (a naive one is taken as UTC, as the schemas store it).
        tz: the reader's zone; where ``moment`` has no time in it (the edges of the
            calendar), the time is shown in UTC, and says so; an en dash where it has
            none there either.
        locale: the month names (English for a locale not written out yet).
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = in_zone(moment, tz)
    if local is None:  # the first or last hours of year 1 / 9999 have no local time
        local, tz = in_zone(moment, UTC), UTC
    if local is None:
        return UNSHOWN
    # Month names from the table, not strftime's %b, which follows the process's locale.
    month = _locale(locale).months[local.month - 1]
    return f"{local.day:02d} {month} {local.year:04d}, {local:%H:%M} ({zone_name(tz)})"
