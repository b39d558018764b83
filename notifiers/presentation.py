"""How an event reads, whatever the channel's markup: kind and status labels, headlines.

Shared by email, Slack and the web pages, so an event is named the same everywhere.
"""

from __future__ import annotations

import re
from typing import Final

from notifiers.text import with_unit
from schemas.events import Event, MeetingNotes, MetricUpdate, Milestone, Update

KIND_LABELS: Final = {
    "metric": "Metric update",
    "milestone": "Milestone",
    "meeting": "Meeting notes",
    "update": "Update",
}
STATUS_LABELS: Final = {
    "planned": "Planned",
    "reached": "Reached",
    "missed": "Missed",
    "at-risk": "At risk",
}


def paragraphs(text: str) -> list[list[str]]:
    """Paragraphs (split at blank lines), each a list of its lines."""
    blocks = re.split(r"\n(?:[ \t]*\n)+", text.strip())
    return [[line.rstrip() for line in b.split("\n")] for b in blocks if b.strip()]


def headline(event: Event) -> str:
    """One line naming the event: the subject line without the initiative."""
    match event.data:
        case MetricUpdate() as m:
            period = f" ({m.period})" if m.period else ""
            return f"{m.indicator}: {with_unit(m.value, m.unit)}{period}"
        case Milestone() as m:
            return f"Milestone {STATUS_LABELS[m.status].lower()}: {m.title}"
        case MeetingNotes() as m:
            return f"Meeting notes: {m.title}"
        case Update() as u:
            return u.title
