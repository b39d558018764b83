"""Table tests for the digest schedule maths (services/digest/schedule.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from schemas.errors import InvalidInputError, InvalidSubjectError
from services.digest.schedule import (
    DigestSpec,
    cron_for,
    next_run,
    parse_digest,
    period_key,
    previous_run,
    schedule_headers,
)

NY = "America/New_York"
BERLIN = "Europe/Berlin"
DHAKA = "Asia/Dhaka"
LORD_HOWE = "Australia/Lord_Howe"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(tz: str, wall: str, *, fold: int = 0) -> datetime:
    """``wall`` (ISO, no offset) on the clocks of ``tz``."""
    return datetime.fromisoformat(wall).replace(tzinfo=ZoneInfo(tz), fold=fold)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("daily@08:00", DigestSpec("daily", 8, 0)),
        ("daily@00:00", DigestSpec("daily", 0, 0)),
        ("daily@23:59", DigestSpec("daily", 23, 59)),
        ("weekly@mon-08:30", DigestSpec("weekly", 8, 30, 0)),
        ("weekly@sun-18:05", DigestSpec("weekly", 18, 5, 6)),
    ],
)
def test_parse_digest(spec: str, expected: DigestSpec) -> None:
    assert parse_digest(spec) == expected
    assert str(expected) == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "use daily@HH:MM"),
        ("daily", "use daily@HH:MM"),
        ("Daily@08:00", "use daily@HH:MM"),
        ("daily@8:00", "HH:MM"),
        ("daily@24:00", "hour 24"),
        ("daily@08:60", "minute 60"),
        ("daily@mon-08:00", "takes no day"),
        ("weekly@08:00", "needs a day"),
        ("weekly@monday-08:00", "'monday' is not a day"),
        ("monthly@08:00", "'monthly' is not daily or weekly"),
        (" daily@08:00", "use daily@HH:MM"),
    ],
)
def test_parse_digest_rejects(spec: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_digest(spec)


@pytest.mark.parametrize(
    ("spec", "cron"),
    [
        ("daily@08:00", "0 0 8 * * *"),
        ("daily@00:00", "0 0 0 * * *"),
        ("daily@23:59", "0 59 23 * * *"),
        ("daily@07:05", "0 5 7 * * *"),
        ("weekly@mon-08:30", "0 30 8 * * 1"),
        ("weekly@sat-09:00", "0 0 9 * * 6"),
        ("weekly@sun-18:15", "0 15 18 * * 0"),
    ],
)
def test_cron_for(spec: str, cron: str) -> None:
    assert cron_for(spec) == cron
    assert cron_for(parse_digest(spec)) == cron
    assert len(cron.split()) == 6


def test_schedule_headers() -> None:
    assert schedule_headers("weekly@mon-08:30", DHAKA, "digest-tick.ana") == {
        "Nats-Schedule": "0 30 8 * * 1",
        "Nats-Schedule-Target": "digest-tick.ana",
        "Nats-Schedule-Time-Zone": DHAKA,
    }


@pytest.mark.parametrize("target", ["", "digest-tick.*", "digest-tick.>", "a..b", "a b", "a.\r\n"])
def test_schedule_headers_rejects_target(target: str) -> None:
    with pytest.raises(InvalidSubjectError):
        schedule_headers("daily@08:00", "UTC", target)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "/etc/localtime", "../UTC", "UTC\r\nX: y"])
def test_unknown_time_zone(tz: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown time zone"):
        schedule_headers("daily@08:00", tz, "digest-tick.ana")
    with pytest.raises(InvalidInputError, match="unknown time zone"):
        next_run("daily@08:00", tz, utc(2026, 1, 1))


def test_naive_datetime_rejected() -> None:
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        next_run("daily@08:00", "UTC", datetime(2026, 1, 1))
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        period_key("daily@08:00", "UTC", datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("spec", "tz", "after", "expected"),
    [
        # Plain cases: strictly after, same day or next day / week.
        ("daily@08:00", "UTC", utc(2026, 6, 1, 7, 59), utc(2026, 6, 1, 8, 0)),
        ("daily@08:00", "UTC", utc(2026, 6, 1, 8, 0), utc(2026, 6, 2, 8, 0)),
        ("daily@08:00", "UTC", utc(2026, 12, 31, 9, 0), utc(2027, 1, 1, 8, 0)),
        ("weekly@mon-08:30", "UTC", utc(2026, 6, 1, 8, 30), utc(2026, 6, 8, 8, 30)),
        ("weekly@mon-08:30", "UTC", utc(2026, 6, 3), utc(2026, 6, 8, 8, 30)),
        # New York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT: 08:00 local both sides.
        ("daily@08:00", NY, utc(2026, 3, 7, 0), utc(2026, 3, 7, 13, 0)),
        ("daily@08:00", NY, utc(2026, 3, 7, 13, 0), utc(2026, 3, 8, 12, 0)),
        ("daily@08:00", NY, utc(2026, 3, 8, 12, 0), utc(2026, 3, 9, 12, 0)),
        # New York, fall back 2026-11-01 02:00 EDT -> 01:00 EST.
        ("daily@08:00", NY, utc(2026, 10, 31, 12, 0), utc(2026, 11, 1, 13, 0)),
        ("daily@08:00", NY, utc(2026, 11, 1, 13, 0), utc(2026, 11, 2, 13, 0)),
        # Local evening is the next UTC day.
        ("daily@22:00", NY, utc(2026, 11, 1, 12, 0), utc(2026, 11, 2, 3, 0)),
        # Berlin, 2026-03-29 CET -> CEST and 2026-10-25 CEST -> CET.
        ("daily@08:00", BERLIN, utc(2026, 3, 28, 8, 0), utc(2026, 3, 29, 6, 0)),
        ("daily@08:00", BERLIN, utc(2026, 10, 24, 7, 0), utc(2026, 10, 25, 7, 0)),
        ("weekly@mon-08:30", BERLIN, utc(2026, 3, 27), utc(2026, 3, 30, 6, 30)),
        ("weekly@sun-02:30", BERLIN, utc(2026, 10, 20), utc(2026, 10, 25, 0, 30)),
        # Dhaka: UTC+6 all year.
        ("daily@08:00", DHAKA, utc(2026, 3, 8), utc(2026, 3, 8, 2, 0)),
        ("daily@08:00", DHAKA, utc(2026, 11, 1, 2, 0), utc(2026, 11, 2, 2, 0)),
        ("daily@05:00", DHAKA, utc(2026, 6, 1, 0, 0), utc(2026, 6, 1, 23, 0)),
        # Lord Howe: +11:00 in summer, +10:30 in winter (a 30-minute shift).
        ("daily@08:00", LORD_HOWE, utc(2026, 4, 3, 0), utc(2026, 4, 3, 21, 0)),
        ("daily@08:00", LORD_HOWE, utc(2026, 4, 3, 21, 0), utc(2026, 4, 4, 21, 30)),
        ("daily@08:00", LORD_HOWE, utc(2026, 10, 2, 21, 30), utc(2026, 10, 3, 21, 0)),
    ],
)
def test_next_run(spec: str, tz: str, after: datetime, expected: datetime) -> None:
    run = next_run(spec, tz, after)
    assert run == expected
    assert run.tzinfo is UTC
    local_run = run.astimezone(ZoneInfo(tz))
    assert (local_run.hour, local_run.minute) == (
        parse_digest(spec).hour,
        parse_digest(spec).minute,
    )


@pytest.mark.parametrize(
    ("spec", "tz", "after", "expected"),
    [
        # 02:30 does not exist in New York on 2026-03-08: no run that day (as nats-server).
        ("daily@02:30", NY, utc(2026, 3, 7, 8, 0), utc(2026, 3, 9, 6, 30)),
        ("weekly@sun-02:30", NY, utc(2026, 3, 2), utc(2026, 3, 15, 6, 30)),
        # Berlin skips 02:00-02:59 on 2026-03-29.
        ("daily@02:00", BERLIN, utc(2026, 3, 28, 2, 0), utc(2026, 3, 30, 0, 0)),
        # Lord Howe skips 02:00-02:29 on 2026-10-04; 02:45 still exists.
        ("daily@02:15", LORD_HOWE, utc(2026, 10, 3, 0, 0), utc(2026, 10, 4, 15, 15)),
        ("daily@02:45", LORD_HOWE, utc(2026, 10, 3, 0, 0), utc(2026, 10, 3, 15, 45)),
        # Ambiguous 01:30 in New York on 2026-11-01: the first occurrence (EDT) only.
        ("daily@01:30", NY, utc(2026, 10, 31, 12, 0), utc(2026, 11, 1, 5, 30)),
        ("daily@01:30", NY, utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)),
        # Ambiguous 01:45 on Lord Howe on 2026-04-05: the first (+11:00) occurrence.
        ("daily@01:45", LORD_HOWE, utc(2026, 4, 4, 0, 0), utc(2026, 4, 4, 14, 45)),
    ],
)
def test_next_run_dst_gap_and_overlap(
    spec: str, tz: str, after: datetime, expected: datetime
) -> None:
    assert next_run(spec, tz, after) == expected


@pytest.mark.parametrize(
    ("spec", "tz", "start", "days"),
    [
        ("daily@08:00", NY, utc(2026, 1, 1), 400),
        ("daily@08:00", LORD_HOWE, utc(2026, 1, 1), 400),
        ("daily@01:30", NY, utc(2026, 1, 1), 400),
        ("weekly@fri-23:59", BERLIN, utc(2026, 1, 1), 800),
    ],
)
def test_runs_step_one_period_and_keys_are_unique(
    spec: str, tz: str, start: datetime, days: int
) -> None:
    """Walking run to run: every run gets a new period key, exactly one per period."""
    keys: list[str] = []
    at = start
    while at < start + timedelta(days=days):
        at = next_run(spec, tz, at)
        assert previous_run(spec, tz, at) == at
        keys.append(period_key(spec, tz, at))
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("spec", "tz", "at", "key"),
    [
        ("daily@08:00", "UTC", utc(2026, 11, 22, 8, 0), "2026-11-22"),
        ("weekly@sun-08:00", "UTC", utc(2026, 11, 22, 8, 0), "2026-W47"),
        # Local date, not the UTC date.
        ("daily@08:00", DHAKA, utc(2026, 11, 22, 2, 0), "2026-11-22"),
        ("daily@07:00", "Pacific/Auckland", utc(2026, 11, 21, 18, 0), "2026-11-22"),
        # A tick handled late still belongs to its run's period.
        ("daily@23:30", BERLIN, utc(2026, 11, 22, 23, 15), "2026-11-22"),
        ("weekly@sun-20:00", NY, local(NY, "2026-11-23T09:00"), "2026-W47"),
        # A tick seen a moment early (clock skew) still counts for its run.
        ("daily@08:00", "UTC", utc(2026, 11, 22, 7, 58), "2026-11-22"),
        ("daily@08:00", "UTC", utc(2026, 11, 22, 7, 50), "2026-11-21"),
        # ISO week-numbering year: 2027-01-01 is in 2026-W53.
        ("weekly@fri-08:00", "UTC", utc(2027, 1, 1, 8, 0), "2026-W53"),
        ("weekly@mon-08:00", "UTC", utc(2026, 12, 28, 8, 0), "2026-W53"),
        # Both ticks of an ambiguous 01:30 (EDT, then EST) are one period.
        ("daily@01:30", NY, local(NY, "2026-11-01T01:30", fold=0), "2026-11-01"),
        ("daily@01:30", NY, local(NY, "2026-11-01T01:30", fold=1), "2026-11-01"),
        # No 02:30 run on 2026-03-08 in New York: the day stays in the previous period.
        ("daily@02:30", NY, local(NY, "2026-03-08T12:00"), "2026-03-07"),
        ("daily@02:30", NY, local(NY, "2026-03-09T02:30"), "2026-03-09"),
        # Lord Howe and Berlin on their change days: 08:00 local is that day's run.
        ("daily@08:00", LORD_HOWE, local(LORD_HOWE, "2026-10-04T08:00"), "2026-10-04"),
        ("daily@08:00", BERLIN, local(BERLIN, "2026-03-29T08:00"), "2026-03-29"),
    ],
)
def test_period_key(spec: str, tz: str, at: datetime, key: str) -> None:
    assert period_key(spec, tz, at) == key


def test_period_key_without_grace() -> None:
    at = utc(2026, 11, 22, 7, 58)
    assert period_key("daily@08:00", "UTC", at, grace=timedelta(0)) == "2026-11-21"
