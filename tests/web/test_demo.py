"""The demo story loads into a real hub, reads well, and loads only once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.errors import InvalidInputError
from schemas.events import MetricUpdate
from services.bus import EVENTS, Bus
from services.directory.records import Directory
from services.runtime.demo import STORY, load_demo, read_story, resolve_time, story_events

NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)


def test_the_story_validates_and_tells_both_initiatives() -> None:
    story = read_story(STORY)
    assert {k: v.name for k, v in story.initiatives.items()} == {
        "somerville": "Shape Up Somerville",
        "oporajita": "Oporajita",
    }
    events = story_events(story, NOW)
    assert all(e.time < NOW for e in events)
    assert events == sorted(events, key=lambda e: e.time)
    kinds = {(e.initiative, e.kind) for e in events}
    assert kinds == {
        (i, k)
        for i in ("somerville", "oporajita")
        for k in ("metric", "milestone", "meeting", "update")
    }
    bmi = [e for e in events if e.topic == "bmi"]
    assert bmi
    assert all(isinstance(e.data, MetricUpdate) and e.data.direction == "decrease" for e in bmi)
    patterns = {s.pattern for r in story.recipients for s in r.subscriptions}
    assert "impact.*.milestone.>" in patterns
    assert {s.mode for r in story.recipients for s in r.subscriptions} == {"immediate", "digest"}
    assert {s.channel for r in story.recipients for s in r.subscriptions} == {"email", "slack"}
    assert len({r.model_dump().get("timezone") for r in story.recipients}) >= 4


@pytest.mark.parametrize(
    ("when", "tz", "expected"),
    [
        ("-21d 09:30", "America/New_York", "2026-11-01T09:30:00-05:00"),
        ("-1d 16:00", "Asia/Dhaka", "2026-11-21T16:00:00+06:00"),
        ("-3d", "UTC", "2026-11-19T15:00:00+00:00"),
    ],
)
def test_relative_times(when: str, tz: str, expected: str) -> None:
    assert resolve_time(when, tz, NOW).isoformat() == expected


def test_a_broken_story_names_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "story.yaml"
    bad.write_text(
        "initiatives: {somerville: {name: S}}\n"
        "events:\n"
        "  - {when: -1d 09:00, initiative: somerville, kind: milestone, topic: x,\n"
        "     data: {title: T, status: done}}\n"
    )
    with pytest.raises(InvalidInputError, match=r"events\[0\]: .*status"):
        story_events(read_story(bad), NOW)


async def test_load_demo_fills_the_hub_once(bus: Bus) -> None:
    first = await load_demo(bus, STORY)
    again = await load_demo(bus, STORY)

    directory = await Directory.open(bus)
    assert {r.id for r in await directory.list_recipients()} == set(first.recipients)
    assert len(await directory.list_subscriptions()) == first.subscriptions
    stored = (await bus.js.stream_info(EVENTS)).state.messages
    assert stored == first.events == len(read_story(STORY).events)
    assert again.already_loaded
    assert again.events == 0
