"""Digest entries are rendered once and reused: the cache must never mix two readers up.

``render_digest_email`` renders each distinct entry (metric, milestone, meeting, update,
action item) once per format and reuses it, keyed by the entry's equality. Fields the
entry templates never show are left out of equality (``field(compare=False)``); these
tests keep the templates and that list in step, and check that entries that look alike
but read differently (local meeting time, "yours") are rendered apart.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2.nodes
import pytest

from notifiers.render import environment
from schemas.directory import Recipient
from schemas.events import new_event
from services.digest.view import (
    ActionItemView,
    MeetingView,
    MetricView,
    MilestoneView,
    UpdateView,
    build_digest,
    render_digest_email,
)

NOW = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)
VIEWS = (MetricView, MilestoneView, MeetingView, UpdateView, ActionItemView)


def _read_in_parts() -> set[str]:
    """Every attribute the entry templates read (``m.value_text`` gives ``value_text``)."""
    names: set[str] = set()
    env = environment()
    for fmt in ("html", "txt"):
        source = env.loader.get_source(env, f"digest/parts.{fmt}.j2")[0]  # type: ignore[union-attr]
        names |= {node.attr for node in env.parse(source).find_all(jinja2.nodes.Getattr)}
    return names


def _reads(cls: type, name: str, seen: set[str]) -> set[str]:
    """``name`` and, if it is a property of ``cls``, every attribute it reads, recursively."""
    if name in seen:
        return set()
    seen.add(name)
    prop = getattr(cls, name, None)
    if not isinstance(prop, property) or prop.fget is None:
        return {name}
    out = {name}
    for used in re.findall(r"self\.(\w+)", inspect.getsource(prop.fget)):
        out |= _reads(cls, used, seen)
    return out


@pytest.mark.parametrize("cls", VIEWS, ids=lambda c: c.__name__)
def test_templates_read_no_field_left_out_of_equality(cls: type) -> None:
    hidden = {f.name for f in dataclasses.fields(cls) if not f.compare}
    read: set[str] = set()
    for name in _read_in_parts():
        read |= _reads(cls, name, set())
    assert not hidden & read, f"{cls.__name__}: shown but left out of the cache key"


def test_the_check_sees_what_the_templates_read() -> None:
    # guards the guard: the parse finds the attributes the templates are known to use
    assert {"value_text", "held_text", "excerpt", "task", "label"} <= _read_in_parts()
    assert {"bar", "progress_pct", "value", "baseline", "target", "direction"} <= _reads(
        MetricView, "bar", set()
    )


def _reader(rid: str, zone: str, **extra: Any) -> Recipient:
    return Recipient(id=rid, name=rid.title(), timezone=zone, digest="daily@08:00", **extra)


def _meeting(owner: str = "Nobody") -> Any:
    return new_event(
        "meeting",
        "somerville",
        "steering",
        {
            "title": "Steering group",
            "held_at": "2026-11-21T15:00:00Z",
            "summary": "Agreed the plan.",
            "action_items": [{"task": "Book the hall", "owner": owner, "due": "2026-12-01"}],
        },
        event_id="m1",
        time=NOW - timedelta(hours=20),
    )


def test_one_meeting_shows_each_readers_local_time() -> None:
    meeting = _meeting()
    berlin = render_digest_email(
        build_digest(_reader("bo", "Europe/Berlin"), [meeting], {}, NOW), None
    )
    york = render_digest_email(
        build_digest(_reader("ny", "America/New_York"), [meeting], {}, NOW), None
    )
    # the same instant: 16:00 in Berlin, 10:00 in New York, in both parts
    for part in (1, 2):
        assert "21 Nov 2026, 16:00 (Europe/Berlin)" in berlin[part]
        assert "21 Nov 2026, 10:00 (America/New_York)" in york[part]
        assert "10:00" not in berlin[part].split("Steering group", 1)[1].split("Book")[0]


def test_own_action_items_are_marked_only_for_their_owner() -> None:
    meeting = _meeting(owner="Ana")
    ana = render_digest_email(build_digest(_reader("ana", "UTC"), [meeting], {}, NOW), None)
    ben = render_digest_email(build_digest(_reader("ben", "UTC"), [meeting], {}, NOW), None)
    ana_again = render_digest_email(build_digest(_reader("ana", "UTC"), [meeting], {}, NOW), None)
    assert "Yours:" in ana[2]
    assert "YOURS" in ana[1]
    assert "Yours:" not in ben[2]
    assert "YOURS" not in ben[1]
    assert ana_again == ana


def test_a_changed_value_is_rendered_anew() -> None:
    def value_shown(value: float, previous: dict[str, float]) -> tuple[str, str, str]:
        event = new_event(
            "metric",
            "somerville",
            "bmi",
            {
                "indicator": "BMI",
                "value": value,
                "baseline": 20,
                "target": 15,
                "direction": "decrease",
            },
            event_id=f"v{value}",
            time=NOW - timedelta(hours=1),
        )
        return render_digest_email(
            build_digest(_reader("ana", "UTC"), [event], previous, NOW), None
        )

    first = value_shown(17, {})
    assert "60% of the way" in first[2]
    assert "[######----] 60%" in first[1]
    second = value_shown(17, {"somerville/bmi": 18})
    assert "-1 (-5.56%) since last digest" in second[1]
    assert "since last digest" in second[2]
    assert "since last digest" not in first[1]
    third = value_shown(16, {"somerville/bmi": 18})
    assert "80% of the way" in third[2]
    assert "-2 (-11.11%)" in third[1]
