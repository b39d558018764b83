"""Events as older rules stored them: any finite number, any time Python can hold.

The EVENTS stream keeps a year of events, so the hub must read back (and render) what it
once accepted even where today's bounds for new input refuse it.
"""

from __future__ import annotations

import json
from typing import Any

from schemas.events import Event, new_event, parse_event

HUGE_METRICS: tuple[tuple[float, float, float], ...] = (
    (1e308, -1e308, 1e308),
    (1.7e308, -1.7e308, 0.0),
    (-1.7e308, 1.7e308, -1.7e308),
    (5.0, 5.0, 5.0),
)
EXTREME_TIMES: tuple[str, ...] = (
    "9999-12-31T20:00:00-10:00",
    "0001-01-01T00:30:00+14:00",
    "9999-12-31T23:00:00-12:00",
)


def old_event(kind: str, data: dict[str, Any], *, n: int, time: str | None = None) -> bytes:
    """The JSON of a ``kind`` event in ``somerville`` with ``data`` and ``time`` as given.

    Built from a valid event and then edited, as no validation of today would let it
    through.
    """
    base = {
        "metric": {"indicator": "Healthy weight", "value": 1},
        "milestone": {"title": "Market opens", "status": "planned"},
        "meeting": {"title": "Steering", "held_at": "2026-10-01T09:00:00Z"},
        "update": {"title": "News"},
    }[kind]
    event = new_event(kind, "somerville", f"{kind}-{n}", base, event_id=f"old-{kind}-{n}")
    doc = json.loads(event.model_dump_json())
    doc["data"].update(data)
    if time is not None:
        doc["time"] = time
    return json.dumps(doc).encode()


def old_events() -> list[bytes]:
    """One of each extreme: huge numbers, times at both ends of the calendar."""
    out = [
        old_event("metric", {"value": v, "baseline": b, "target": t}, n=i)
        for i, (v, b, t) in enumerate(HUGE_METRICS)
    ]
    for i, time in enumerate(EXTREME_TIMES):
        out.append(old_event("update", {"title": f"Late news {i}"}, n=i, time=time))
        items = [{"task": "Book the hall", "owner": "Ana", "due": "9999-12-31"}]
        meeting = {"held_at": time, "action_items": items}
        out.append(old_event("meeting", meeting, n=i, time=time))
        out.append(old_event("milestone", {"due": "0001-01-01"}, n=i, time=time))
    return out


def subject_of(raw: bytes) -> str:
    """The EVENTS subject ``raw`` is stored under."""
    doc = json.loads(raw)
    return f"impact.{doc['initiative']}.{doc['data']['kind']}.{doc['subject']}"


def parsed(raw: bytes) -> Event:
    """``raw`` read back as a stored event (leniently)."""
    return parse_event(raw)
