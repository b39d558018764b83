"""One measure reads the same in every channel: a table of values x units x channels.

Each case renders one event through every real renderer a partner reads it in (email
text and HTML, Slack, the email and Slack digests, a webhook digest's text, the
initiative page and its Atom feed) and checks that each shows the figure a reader would
expect, written out here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notifiers.base import Links
from notifiers.email import render_bodies
from notifiers.slack import compose_slack
from notifiers.text import change, local_time, number, progress, with_unit
from notifiers.webhook import payload_for
from schemas.delivery import Delivery, Rendered
from schemas.directory import Recipient
from schemas.events import Event, parse_event
from schemas.targets import SlackTarget
from services.digest.slack import digest_blocks
from services.digest.view import build_digest, render_digest_email
from services.web.initiative import render_feed, render_page
from services.web.words import EventHelpers
from tests.notifiers.conftest import build_delivery, make_event

ZONE = "Europe/Berlin"
NOW = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
READER = Recipient(id="ana", name="Ana", timezone=ZONE, digest="daily@08:00")


def stored(kind: str, **data: Any) -> Event:
    """An event as read back from the stream: the old (lenient) rules, so ``1e308`` too."""
    raw = json.loads(make_event(kind).model_dump_json())
    raw["data"].update(data)
    return parse_event(json.dumps(raw))


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def channels(event: Event) -> dict[str, str]:
    """What each channel shows of ``event``, as text (markup left in)."""
    email = build_delivery(event=event, timezone=ZONE)
    text, html = render_bodies(email, Links())
    slack = compose_slack(build_delivery(event=event, channel="slack", timezone=ZONE), Links())
    view = build_digest(READER, [event], {}, NOW)
    _, digest_text, digest_html = render_digest_email(view, None)
    webhook = Delivery(
        event=event,
        recipient="ana",
        target=build_delivery(channel="webhook").target,
        digest_period=view.period,
        rendered=Rendered(subject="digest", text=digest_text),
    )
    helpers = EventHelpers(zone=ZoneInfo(ZONE))
    return {
        "email text": text,
        "email html": html,
        "slack": "\n".join(_strings(dict(slack))),
        "digest text": digest_text,
        "digest html": digest_html,
        "digest slack": "\n".join(_strings(digest_blocks(view))),
        "webhook text": json.loads(payload_for(webhook).model_dump_json())["data"]["text"],
        "initiative page": render_page("somerville", "Somerville", [event], NOW, helpers=helpers),
        "feed": render_feed(
            "somerville", "Somerville", None, [event], "https://hub.example", helpers=helpers
        ),
    }


NUMBERS = [
    (0.0, "0"),
    (0.0042, "0.0042"),
    (17.0, "17"),
    (17.25, "17.25"),
    (1234567.891, "1,234,567.89"),
    (-3.0, "-3"),
    (1e12, "1,000,000,000,000"),
    (1e308, "\u2013"),  # stored under the old rules: beyond what anyone reads
]
UNITS = [(None, ""), ("%", "%"), ("kg", " kg"), ("children", " children")]


@pytest.mark.parametrize(("value", "figure"), NUMBERS, ids=[f for _, f in NUMBERS])
@pytest.mark.parametrize(("unit", "suffix"), UNITS, ids=[str(u) for u, _ in UNITS])
def test_a_value_reads_the_same_in_every_channel(
    value: float, figure: str, unit: str | None, suffix: str
) -> None:
    shown = f"{figure}{suffix}"
    event = stored("metric", value=value, unit=unit, baseline=None, target=None)
    assert with_unit(value, unit) == shown
    for channel, out in channels(event).items():
        # the value stands alone, after its label or in its own element, in every channel
        alone = rf"(?:^|[>\n;]|: ){re.escape(shown)}(?:$|[<\n&]| \()"
        assert re.search(alone, out), channel
        if unit == "%":
            assert f"{figure} %" not in out, channel


# (baseline, target, direction, value) -> whole percent, rounded down, 100 only when reached
PROGRESS = {
    "halfway": ((30, 60, "increase", 45), 50),
    "18.6% rounds down": ((0, 100, "increase", 18.6), 18),
    "99.6% is not done": ((100, 200, "increase", 199.6), 99),
    "reached": ((20, 15, "decrease", 15), 100),
    "overshoot": ((0, 10, "increase", 14), 100),
    "wrong direction": ((20, 15, "decrease", 22), 0),
    "baseline == target, reached": ((10, 10, "increase", 12), 100),
    "baseline == target, not reached": ((10, 10, "increase", 9), 0),
}


@pytest.mark.parametrize(("case", "expected"), PROGRESS.values(), ids=list(PROGRESS))
def test_progress_reads_the_same_in_every_channel(
    case: tuple[float, float, str, float], expected: int
) -> None:
    baseline, target, direction, value = case
    event = stored(
        "metric", value=value, unit="%", baseline=baseline, target=target, direction=direction
    )
    assert progress(value, baseline, target, direction) == expected  # type: ignore[arg-type]
    shown = {channel: out for channel, out in channels(event).items() if channel != "feed"}
    for channel, out in shown.items():
        # "50% of the way" in words, or "[#####-----] 50%" as a text bar
        figures = re.findall(r"(?<![\d.])(\d+)% of the way|\] (\d+)%", out)
        assert figures, f"{channel} shows no progress"
        assert {a or b for a, b in figures} == {str(expected)}, channel


def test_a_meeting_time_reads_the_same_in_every_channel() -> None:
    event = stored("meeting", held_at="2026-10-01T08:00:00Z")
    when = "01 Oct 2026, 10:00 (Europe/Berlin)"
    for channel, out in channels(event).items():
        if channel != "feed":  # the feed's entry shows the event's own time
            assert when in out, channel
        assert "CEST" not in out, channel


def test_a_time_with_no_value_in_the_zone_reads_as_a_dash() -> None:
    end = datetime.fromisoformat("9999-12-31T20:00:00-10:00")
    assert local_time(end, ZoneInfo("Pacific/Kiritimati")) == "\u2013"
    assert local_time(end, ZoneInfo("Pacific/Honolulu")) == "\u2013"  # no UTC value to go by
    near_end = datetime.fromisoformat("9999-12-31T20:00:00+00:00")
    assert local_time(near_end, ZoneInfo("Pacific/Kiritimati")) == "31 Dec 9999, 20:00 (UTC)"


@pytest.mark.parametrize(
    ("delta", "unit", "text"),
    [
        (1.2, None, "+1.2"),
        (-0.4, "kg", "-0.4 kg"),
        (0.0, "%", "0%"),
        (13.333, "%", "+13.33%"),
        (float("inf"), None, "\u2013"),
        (float("nan"), "%", "\u2013%"),
    ],
)
def test_changes_are_signed(delta: float, unit: str | None, text: str) -> None:
    assert change(delta, unit) == text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e308, -1e13])
@pytest.mark.parametrize("shown", [number, lambda v: with_unit(v, "kg")])
def test_what_cannot_be_shown_is_a_dash(value: float, shown: Callable[[float], str]) -> None:
    assert shown(value).startswith("\u2013")


def test_tiny_numbers_are_written_out() -> None:
    assert (number(0.00001), number(-0.00042), number(1e-300)) == ("0.00001", "-0.00042", "0")


def test_other_locales_read_as_english_until_written() -> None:
    assert number(1234.5, locale="fr") == number(1234.5) == "1,234.5"
    moment = datetime(2027, 1, 12, 20, 0, tzinfo=UTC)
    assert local_time(moment, ZoneInfo("America/New_York"), locale="de-DE") == (
        "12 Jan 2027, 15:00 (America/New_York)"
    )


def test_slack_target_is_used() -> None:
    # guards the table: the Slack column is a Slack message, not the email fallback
    delivery = build_delivery("metric", "slack", timezone=ZONE)
    assert isinstance(delivery.target, SlackTarget)
    assert "blocks" in compose_slack(delivery, Links())
