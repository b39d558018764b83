"""Property tests: nothing the schema accepts, now or under older rules, breaks a renderer.

Hypothesis generates events of all four kinds over the whole schema (numbers and times at
the bounds, empty lists, strings of the maximum length, right-to-left and bidi text, every
status and direction), validated as new input; and records as older rules stored them
(numbers up to ±1.7e308, times in years 1 to 9999), read back leniently. Each is rendered
for every channel (email text and HTML, Slack blocks, webhook payload), in digests (email
and Slack) and on the initiative page and its Atom feed, for readers in extreme zones.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from notifiers.base import no_links
from notifiers.email import compose_email
from notifiers.slack import compose_slack
from notifiers.webhook import payload_for
from schemas.bounds import DATE_MAX, DATE_MIN, NUMBER_LIMIT, TIME_MAX, TIME_MIN
from schemas.delivery import Delivery
from schemas.directory import Recipient
from schemas.errors import InvalidInputError
from schemas.events import Event, parse_event
from schemas.targets import EmailTarget, SlackTarget, WebhookTarget
from schemas.text import BIDI_CONTROLS
from services.digest.slack import digest_blocks, fallback_text
from services.digest.view import build_digest, render_digest_email
from services.web.initiative import render_feed, render_page
from services.web.words import EventHelpers

ZONES = ("UTC", "Pacific/Kiritimati", "Etc/GMT+12", "Etc/GMT-14", "Asia/Kathmandu")
OFFSETS = [timezone(timedelta(hours=h)) for h in (-12, -10, 0, 5.75, 14)] + [UTC]
TARGETS = (
    EmailTarget(address="ana@example.org", name="Ana"),
    SlackTarget(conversation="C0123ABC"),
    WebhookTarget(url="https://example.org/hook"),
)
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)

# overrides, embeddings, isolates, RLM, Hebrew and Arabic letters
_RTL = "\u202e\u202b\u2067\u2069\u200f\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627"
_letters = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029\x85")
_line = st.one_of(
    st.text(_letters, min_size=1, max_size=200),
    st.text(st.sampled_from(_RTL + "ab <&>*_~`"), min_size=1, max_size=200),
    st.just("W" * 200),
    st.just("\u202e" + "\u05e9" * 199),
)
_short = st.one_of(st.text(_letters, min_size=1, max_size=40), st.just("%"), st.just("m" * 40))
_text = st.one_of(
    st.just(""),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=300),
    st.text(st.sampled_from(_RTL + "a \n\r\t<>&*"), max_size=300),
    st.just("x" * 20_000),
)
_topic = st.sampled_from(["bmi", "market", "steering", "news"])


def _numbers(old: bool) -> st.SearchStrategy[float]:
    if old:
        edges = st.sampled_from([1.7e308, -1.7e308, 1e308, -1e308, 5e-324, 0.0])
        return st.one_of(edges, st.floats(allow_nan=False, allow_infinity=False))
    edges = st.sampled_from([float(NUMBER_LIMIT), -float(NUMBER_LIMIT), 0.0, 5e-324, 1e-12])
    return st.one_of(edges, st.floats(-NUMBER_LIMIT, NUMBER_LIMIT), st.integers(-9, 9))


def _times(old: bool) -> st.SearchStrategy[str]:
    if old:
        naive = st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59))
        edges = st.sampled_from(
            [
                "9999-12-31T20:00:00-10:00",
                "0001-01-01T00:30:00+14:00",
                "9999-12-31T23:00:00-12:00",
                "0001-01-01T00:00:00Z",
            ]
        )
    else:
        naive = st.datetimes(datetime(1900, 1, 2), datetime(2199, 12, 31))
        edges = st.sampled_from([TIME_MIN.isoformat(), TIME_MAX.isoformat()])
    built = st.builds(
        lambda d, tz: d.replace(tzinfo=tz).isoformat(), naive, st.sampled_from(OFFSETS)
    )
    return st.one_of(edges, built)


def _dates(old: bool) -> st.SearchStrategy[date]:
    if old:
        return st.one_of(st.sampled_from([date.min, date.max]), st.dates())
    return st.one_of(st.sampled_from([DATE_MIN, DATE_MAX]), st.dates(DATE_MIN, DATE_MAX))


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _data(old: bool) -> st.SearchStrategy[dict[str, Any]]:
    number, day = _numbers(old), _dates(old)
    metric = st.fixed_dictionaries(
        {
            "kind": st.just("metric"),
            "indicator": _line,
            "value": number,
            "unit": _optional(_short),
            "period": _optional(_short),
            "baseline": _optional(number),
            "target": _optional(number),
            "direction": st.sampled_from(["increase", "decrease"]),
            "note": _optional(_text),
        }
    )
    milestone = st.fixed_dictionaries(
        {
            "kind": st.just("milestone"),
            "title": _line,
            "status": st.sampled_from(["planned", "reached", "missed", "at-risk"]),
            "due": _optional(day.map(date.isoformat)),
            "note": _optional(_text),
        }
    )
    item = st.fixed_dictionaries(
        {"task": _line, "owner": st.one_of(_line, st.just("Ana")), "due": _optional(day)}
    ).map(lambda i: {**i, "due": i["due"].isoformat() if i["due"] else None})
    meeting = st.fixed_dictionaries(
        {
            "kind": st.just("meeting"),
            "title": _line,
            "held_at": _times(old),
            "attendees": st.lists(_line, max_size=3),
            "summary": _text,
            "decisions": st.lists(_text, max_size=3),
            "action_items": st.lists(item, max_size=4),
        }
    )
    update = st.fixed_dictionaries(
        {
            "kind": st.just("update"),
            "title": _line,
            "body": _text,
            "url": _optional(st.sampled_from(["https://example.org/a?b=1&c=<2>", "http://x.org"])),
        }
    )
    return st.one_of(metric, milestone, meeting, update)


@st.composite
def events(draw: st.DrawFn, old: bool) -> Event:
    """One event, validated as new input (``old=False``) or read back as stored."""
    data = draw(_data(old))
    doc = {
        "specversion": "1.0",
        "id": draw(
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128)
        ),
        "source": "urn:test",
        "type": f"org.impactbus.{data['kind']}",
        "time": draw(_times(old)),
        "subject": draw(_topic),
        "initiative": "somerville",
        "data": data,
    }
    raw = json.dumps(doc)
    try:
        return parse_event(raw, new=not old)
    except ValueError:
        assume(False)  # e.g. a title of nothing but bidi controls: "required"
        raise


def _render_all(event: Event, zone: str) -> None:
    for target in TARGETS:
        delivery = Delivery(event=event, recipient="ana", target=target, timezone=zone)
        links = no_links(delivery)
        if target.channel == "email":
            message = compose_email(delivery, links, "hub <hub@example.org>")
            assert "\u202e" not in str(message["Subject"])
            message.as_bytes()
        elif target.channel == "slack":
            json.dumps(compose_slack(delivery, links))
        else:
            payload_for(delivery).model_dump_json()


def _digest_and_pages(evs: list[Event], zone: str, name: str, previous: dict[str, float]) -> None:
    reader = Recipient(id="ana", name=name, timezone=zone, digest="weekly@mon-08:00")
    view = build_digest(reader, evs, previous, NOW)
    subject, text, html = render_digest_email(view, "https://hub.example/p")
    assert subject
    assert text
    assert html
    json.dumps(digest_blocks(view))
    fallback_text(view)
    newest_first = sorted(evs, key=lambda e: e.time, reverse=True)
    # the shared pages in a hub whose zone is the reader's (IMPACTBUS_TIMEZONE)
    helpers = EventHelpers(zone=ZoneInfo(zone) if zone != "UTC" else UTC)
    page = render_page("somerville", name, newest_first, NOW, helpers=helpers)
    assert "<html" in page.lower()
    render_feed("somerville", name, None, newest_first, "https://hub.example", helpers=helpers)


_zones = st.sampled_from(ZONES)
_previous = st.dictionaries(_topic.map(lambda t: f"somerville/{t}"), _numbers(True), max_size=3)


@PROPERTY
@given(event=events(old=False), zone=_zones)
def test_new_events_render_on_every_channel(event: Event, zone: str) -> None:
    _render_all(event, zone)


@PROPERTY
@given(event=events(old=True), zone=_zones)
def test_old_rule_events_render_on_every_channel(event: Event, zone: str) -> None:
    _render_all(event, zone)


@settings(PROPERTY, max_examples=25)
@given(
    evs=st.lists(st.one_of(events(old=False), events(old=True)), min_size=0, max_size=6),
    zone=_zones,
    name=_line.filter(lambda s: BIDI_CONTROLS.sub("", s)),
    previous=_previous,
)
def test_digests_pages_and_feeds_render(
    evs: list[Event], zone: str, name: str, previous: dict[str, float]
) -> None:
    _digest_and_pages(evs, zone, name, previous)


@PROPERTY
@given(event=events(old=True))
def test_old_rule_records_fail_new_input_only_by_their_bounds(event: Event) -> None:
    raw = event.model_dump_json()
    again = parse_event(raw)  # a stored event reads back as itself
    assert again == event
    problems = _new_input_problems(raw)
    assert all("trillion" in p or "1900-01-01 and 2200-01-01" in p for p in problems), problems


def _new_input_problems(raw: str) -> list[str]:
    try:
        parse_event(raw, new=True)
    except InvalidInputError as exc:
        return str(exc).split("; ")
    return []
