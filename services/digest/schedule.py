"""Digest schedule maths: pure functions, no I/O and no clock.

A recipient's digest schedule is ``daily@HH:MM`` or ``weekly@<day>-HH:MM`` in their own
time zone (see :class:`schemas.directory.Recipient`). The NATS server fires it: the digest
service publishes a message schedule (:func:`schedule_headers`) whose 6-field cron
(:func:`cron_for`) the server evaluates in the recipient's zone. :func:`next_run` and
:func:`period_key` predict and label those runs.

Daylight saving time: a run is the wall-clock time in the recipient's zone, so a daily
08:00 digest is at 08:00 local on both sides of a change (its UTC instant moves by the
shift). Two local times need a rule, and both follow what nats-server's cron does
(``server/cron.go``, after robfig/cron), so the prediction matches the real tick:

* **Non-existent** (spring forward, e.g. 02:30 in New York on 2026-03-08): there is no run
  that day. The waiting items go into the next run's digest; nothing is lost. Moving the
  run to 03:30 would look kinder, but the server would not fire then, and a prediction
  that disagrees with the tick is worse than a documented skip.
* **Ambiguous** (fall back, e.g. 01:30 in New York on 2026-11-01): the run is the first
  occurrence. The server fires again at the second one; :func:`period_key` gives both
  ticks the same period, which is how the digest service sends exactly one digest.

Periods are anchored to runs, not to the calendar day of the clock: the period of an
instant is the local date (daily) or ISO week (weekly) of the latest run at or before it.
A tick processed late (after midnight, or on Monday for a Sunday digest) therefore still
belongs to the period of the run that produced it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.errors import InvalidInputError, InvalidSubjectError
from schemas.subjects import is_wildcard

Frequency = Literal["daily", "weekly"]
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names in :meth:`datetime.date.weekday` order (0 is Monday)."""

PERIOD_GRACE: Final = timedelta(minutes=5)
"""How early a tick may be (clock skew) and still count for the run it announces."""

_SPEC_RE: Final = re.compile(
    r"(?P<freq>[a-z]+)@(?:(?P<day>[a-z]+)-)?(?P<hour>\d{1,2}):(?P<minute>\d{1,2})"
)
_TOKEN_RE: Final = re.compile(r"[!-~]+")  # printable ASCII, no spaces: a NATS subject token
_SPEC_HELP: Final = "use daily@HH:MM or weekly@<mon..sun>-HH:MM, e.g. daily@08:00"
# Run lookups walk day by day; a weekly run skipped by a DST gap is 14 days away at most.
_SEARCH_DAYS: Final = 28


@dataclass(frozen=True, slots=True)
class DigestSpec:
    """A parsed digest schedule.

    Attributes:
        frequency: ``daily`` or ``weekly``.
        hour: local hour, 0-23.
        minute: local minute, 0-59.
        weekday: for weekly digests the day, 0 (Monday) to 6 (Sunday); ``None`` if daily.
    """

    frequency: Frequency
    hour: int
    minute: int
    weekday: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.hour <= 23:
            raise InvalidInputError(f"hour {self.hour} is not between 00 and 23")
        if not 0 <= self.minute <= 59:
            raise InvalidInputError(f"minute {self.minute} is not between 00 and 59")
        if (self.frequency == "weekly") != (self.weekday is not None):
            raise InvalidInputError("a weekly digest needs a weekday and a daily one none")
        if self.weekday is not None and not 0 <= self.weekday <= 6:
            raise InvalidInputError(f"weekday {self.weekday} is not between 0 and 6")

    def __str__(self) -> str:
        at = f"{self.hour:02d}:{self.minute:02d}"
        if self.weekday is None:
            return f"daily@{at}"
        return f"weekly@{WEEKDAYS[self.weekday]}-{at}"


def parse_digest(spec: str) -> DigestSpec:
    """Parse ``daily@HH:MM`` or ``weekly@<day>-HH:MM`` (day is ``mon`` to ``sun``).

    Args:
        spec: the schedule as stored on the recipient, e.g. ``weekly@mon-08:30``.

    Raises:
        InvalidInputError: the text is not a schedule; the message says which part is wrong.
    """
    found = _SPEC_RE.fullmatch(spec)
    if found is None:
        raise InvalidInputError(f"digest schedule {spec!r}: {_SPEC_HELP}")
    freq, day = found["freq"], found["day"]
    hour, minute = found["hour"], found["minute"]
    if len(hour) != 2 or len(minute) != 2:
        raise InvalidInputError(f"digest schedule {spec!r}: write the time as HH:MM (08:00)")
    try:
        if freq == "daily" and day is None:
            return DigestSpec("daily", int(hour), int(minute))
        if freq == "weekly" and day in WEEKDAYS:
            return DigestSpec("weekly", int(hour), int(minute), WEEKDAYS.index(day))
    except InvalidInputError as exc:
        raise InvalidInputError(f"digest schedule {spec!r}: {exc}") from None
    if freq == "weekly" and day is not None:
        days = ", ".join(WEEKDAYS)
        raise InvalidInputError(f"digest schedule {spec!r}: {day!r} is not a day, use {days}")
    if freq in ("daily", "weekly"):
        which = "needs a day (weekly@mon-08:00)" if freq == "weekly" else "takes no day"
        raise InvalidInputError(f"digest schedule {spec!r}: a {freq} digest {which}")
    raise InvalidInputError(f"digest schedule {spec!r}: {freq!r} is not daily or weekly")


def cron_for(spec: DigestSpec | str) -> str:
    """The 6-field NATS cron (``sec min hour dom month dow``) of a schedule.

    ``daily@08:00`` is ``0 0 8 * * *``; ``weekly@mon-08:30`` is ``0 30 8 * * 1`` (cron
    counts days from Sunday = 0).

    Raises:
        InvalidInputError: ``spec`` is a string that is not a schedule.
    """
    s = _spec(spec)
    dow = "*" if s.weekday is None else str((s.weekday + 1) % 7)
    return f"0 {s.minute} {s.hour} * * {dow}"


def schedule_headers(spec: DigestSpec | str, tz: str, target_subject: str) -> dict[str, str]:
    """The headers of a NATS message schedule that fires ``spec`` in zone ``tz``.

    Publish a message with these headers on a schedule subject of a stream with
    ``allow_msg_schedules``; the server then publishes to ``target_subject`` at each run.

    Args:
        spec: the digest schedule.
        tz: the recipient's IANA time zone, e.g. ``Asia/Dhaka``.
        target_subject: where the server publishes each tick (no wildcards).

    Raises:
        InvalidInputError: unknown schedule or time zone.
        InvalidSubjectError: the target is not a concrete subject (empty token, space,
            wildcard).
    """
    _zone(tz)
    tokens = target_subject.split(".")
    if is_wildcard(target_subject) or not all(_TOKEN_RE.fullmatch(t) for t in tokens):
        raise InvalidSubjectError(
            f"schedule target {target_subject!r} must be a concrete subject (no wildcards)"
        )
    return {
        "Nats-Schedule": cron_for(spec),
        "Nats-Schedule-Target": target_subject,
        "Nats-Schedule-Time-Zone": tz,
    }


def next_run(spec: DigestSpec | str, tz: str, after: datetime) -> datetime:
    """The first run strictly after ``after``, as an aware UTC datetime.

    Days whose run time does not exist locally (DST gap) have no run; an ambiguous run
    time (DST overlap) runs at its first occurrence. See the module docstring.

    Raises:
        InvalidInputError: unknown schedule or time zone, or ``after`` is naive.
    """
    s, zone = _spec(spec), _zone(tz)
    start = _local_date(after, zone, "after")
    for offset in range(_SEARCH_DAYS + 1):
        run = _run_on(s, zone, start + timedelta(days=offset))
        if run is not None and run > after:
            return run
    raise AssertionError(f"no run of {s} in {tz} within {_SEARCH_DAYS} days")  # pragma: no cover


def previous_run(spec: DigestSpec | str, tz: str, at: datetime) -> datetime:
    """The latest run at or before ``at``, as an aware UTC datetime.

    Raises:
        InvalidInputError: unknown schedule or time zone, or ``at`` is naive.
    """
    s, zone = _spec(spec), _zone(tz)
    start = _local_date(at, zone, "at")
    for offset in range(_SEARCH_DAYS + 1):
        run = _run_on(s, zone, start - timedelta(days=offset))
        if run is not None and run <= at:
            return run
    raise AssertionError(f"no run of {s} in {tz} within {_SEARCH_DAYS} days")  # pragma: no cover


def period_key(
    spec: DigestSpec | str, tz: str, at: datetime, *, grace: timedelta = PERIOD_GRACE
) -> str:
    """The period a digest at ``at`` belongs to: one digest per recipient per period.

    The period is that of the latest run at or before ``at + grace``: its local date
    (``2026-11-22``) for daily digests, its ISO week (``2026-W47``) for weekly ones.

    Args:
        spec: the digest schedule.
        tz: the recipient's time zone.
        at: when the tick fired (or now).
        grace: how early a tick may arrive and still count for the run it announces.

    Raises:
        InvalidInputError: unknown schedule or time zone, or ``at`` is naive.
    """
    s = _spec(spec)
    day = previous_run(s, tz, at + grace).astimezone(_zone(tz)).date()
    if s.frequency == "daily":
        return day.isoformat()
    iso = day.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def _spec(spec: DigestSpec | str) -> DigestSpec:
    return spec if isinstance(spec, DigestSpec) else parse_digest(spec)


@lru_cache(maxsize=512)
def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            f"unknown time zone {tz!r} (use an IANA name like Europe/Berlin)"
        ) from None


def _local_date(moment: datetime, zone: ZoneInfo, what: str) -> date:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInputError(f"{what} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(zone).date()


def _run_on(spec: DigestSpec, zone: ZoneInfo, day: date) -> datetime | None:
    """The run on local ``day`` in UTC, or ``None`` if there is none that day."""
    if spec.weekday is not None and day.weekday() != spec.weekday:
        return None
    # fold=0: an ambiguous wall time resolves to its first occurrence (PEP 495).
    wall = datetime.combine(day, time(spec.hour, spec.minute), tzinfo=zone)
    run = wall.astimezone(UTC)
    if run.astimezone(zone).replace(tzinfo=None) != wall.replace(tzinfo=None):
        return None  # the wall time falls in a DST gap: it never shows on a clock that day
    return run
