"""The two strictness levels of the schema: new input within bounds, stored events lenient."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from schemas.errors import InvalidInputError
from schemas.events import MeetingNotes, MetricUpdate, Update, new_event, parse_event
from tests.oldrule import old_event


@pytest.mark.parametrize("value", [1e308, -1.7e308, 10**12 + 1, 1.0000001e12])
def test_new_numbers_beyond_a_trillion_are_refused_in_words(value: float) -> None:
    with pytest.raises(InvalidInputError, match="minus one trillion to one trillion"):
        new_event("metric", "somerville", "bmi", {"indicator": "x", "value": value})


def test_new_numbers_at_the_bound_and_ints_are_accepted() -> None:
    data = {"indicator": "x", "value": 10**12, "baseline": -(10**12), "target": 0}
    event = new_event("metric", "somerville", "bmi", data)
    assert isinstance(event.data, MetricUpdate)
    assert (event.data.value, event.data.baseline) == (1e12, -1e12)


@pytest.mark.parametrize("value", [True, False, "3"])
def test_new_numbers_must_be_numbers(value: object) -> None:
    with pytest.raises(InvalidInputError, match=r"data\.value: must be a number, not"):
        new_event("metric", "somerville", "bmi", {"indicator": "x", "value": value})


@pytest.mark.parametrize(
    "time",
    [
        datetime(9999, 12, 31, 20, tzinfo=UTC),
        datetime(1899, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2200, 1, 1, 0, 0, 1, tzinfo=UTC),
    ],
)
def test_new_times_outside_1900_to_2200_are_refused(time: datetime) -> None:
    with pytest.raises(InvalidInputError, match=r"time: must be between 1900-01-01 and 2200"):
        new_event("update", "somerville", "news", {"title": "t"}, time=time)


def test_new_meeting_and_due_dates_are_bounded() -> None:
    meeting = {"title": "m", "held_at": "9999-12-31T23:00:00-12:00"}
    with pytest.raises(InvalidInputError, match=r"data\.held_at: must be between"):
        new_event("meeting", "somerville", "steering", meeting)
    milestone = {"title": "m", "status": "planned", "due": "0001-01-01"}
    with pytest.raises(InvalidInputError, match=r"data\.due: must be between"):
        new_event("milestone", "somerville", "market", milestone)


def test_stored_events_are_read_under_the_old_rules() -> None:
    raw = old_event(
        "metric",
        {"value": 1.7e308, "baseline": -1.7e308, "target": True},
        n=1,
        time="0001-01-01T00:30:00+14:00",
    )
    event = parse_event(raw)
    assert isinstance(event.data, MetricUpdate)
    assert (event.data.value, event.data.target) == (1.7e308, 1.0)
    assert event.time.year == 1
    with pytest.raises(InvalidInputError, match="trillion"):
        parse_event(raw, new=True)


def test_stored_nan_stays_refused() -> None:
    doc = json.loads(old_event("metric", {}, n=2))
    raw = json.dumps(doc).replace('"value": 1.0', '"value": NaN')
    with pytest.raises(InvalidInputError, match=r"data\.value"):
        parse_event(raw)


@pytest.mark.parametrize("body", ["one\r\ntwo", "one\rtwo", "one\ntwo"])
def test_multi_line_text_gets_lf_line_ends(body: str) -> None:
    event = new_event("update", "somerville", "news", {"title": "t", "body": body})
    assert isinstance(event.data, Update)
    assert event.data.body == "one\ntwo"


def test_other_control_characters_in_text_are_still_refused() -> None:
    with pytest.raises(InvalidInputError, match="control characters"):
        new_event("update", "somerville", "news", {"title": "t", "body": "a\x07b"})


@pytest.mark.parametrize(
    "control", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2069"]
)
def test_bidi_controls_are_stripped_from_single_line_fields(control: str) -> None:
    data = {
        "title": f"Invoice {control}gpj.exe",
        "held_at": "2026-10-01T09:00:00Z",
        "attendees": [f"Ana{control}"],
        "action_items": [{"task": "t", "owner": f"{control}Bo"}],
    }
    event = new_event("meeting", "somerville", "steering", data)
    assert isinstance(event.data, MeetingNotes)
    assert event.data.title == "Invoice gpj.exe"
    assert event.data.attendees == ["Ana"]
    assert event.data.action_items[0].owner == "Bo"


def test_a_title_of_only_bidi_controls_is_required() -> None:
    with pytest.raises(InvalidInputError, match=r"data\.title"):
        new_event("update", "somerville", "news", {"title": "\u202e\u2066"})


def test_bidi_text_in_multi_line_fields_is_kept() -> None:
    event = new_event(
        "update",
        "somerville",
        "news",
        {"title": "t", "body": "\u202e\u05e2\u05d1\u05e8\u05d9\u05ea"},
    )
    assert isinstance(event.data, Update)
    assert event.data.body == "\u202e\u05e2\u05d1\u05e8\u05d9\u05ea"
