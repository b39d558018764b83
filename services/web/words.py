"""Subscriptions in words: ``impact.somerville.>`` -> "Everything from Shape Up Somerville".

Pure functions: the pages look up initiative names (settings) and topic labels (the
latest event of a topic) and pass them in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Final

from notifiers.presentation import KIND_LABELS, STATUS_LABELS, headline, paragraphs
from notifiers.text import local_time, metric_progress, with_unit
from schemas.events import Event, MetricUpdate

KIND_PLURALS: Final = {
    "metric": "Metric updates",
    "milestone": "Milestones",
    "meeting": "Meeting notes",
    "update": "Updates",
}


def initiative_name(initiative: str, names: Mapping[str, str]) -> str:
    """The display name of an initiative: configured, else its id in words."""
    if initiative in names:
        return names[initiative]
    return initiative.replace("-", " ").replace("_", " ").title()


def topic_label(event: Event) -> str:
    """What a topic is about, from its latest event: the indicator or the title."""
    data = event.data
    return data.indicator if isinstance(data, MetricUpdate) else data.title


def describe_pattern(
    pattern: str, names: Mapping[str, str], topics: Mapping[str, str] | None = None
) -> str:
    """A subscription pattern as a reader would say it.

    Args:
        pattern: a valid subscription pattern, e.g. ``impact.*.milestone.>``.
        names: initiative id -> display name.
        topics: subject of a topic (``impact.<i>.<kind>.<topic>``) -> its label.

    Returns:
        e.g. "Everything from Shape Up Somerville", "Milestones from every initiative",
        "Children's BMI in Shape Up Somerville".
    """
    topics = topics or {}
    parts = pattern.split(".")[1:]
    initiative = parts[0] if parts else ">"
    kind = parts[1] if len(parts) > 1 else ">"
    topic = parts[2] if len(parts) > 2 else ">"
    if initiative in ("*", ">"):
        where_from, where_in = "every initiative", "every initiative"
    else:
        name = initiative_name(initiative, names)
        where_from, where_in = name, name
    if initiative == ">":
        return "Everything from every initiative"
    if topic not in ("*", ">"):
        label = topics.get(pattern) or f"“{topic}”"
        if kind in KIND_PLURALS:
            return f"{label} in {where_in}"
        return f"Everything about {label} in {where_in}"
    if kind in KIND_PLURALS:
        return f"{KIND_PLURALS[kind]} from {where_from}"
    return f"Everything from {where_from}"


def slug(text: str, limit: int = 64) -> str:
    """A subject token from free text: ``Farmers' market opens`` -> ``farmers-market-opens``."""
    token = re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")
    return token[:limit].rstrip("-")


@dataclass(frozen=True, slots=True)
class EventHelpers:
    """What ``web/_event.html.j2`` needs to show any event, as ``h`` (times in ``zone``)."""

    headline: Callable[[Event], str] = headline
    with_unit: Callable[[float, str | None], str] = with_unit
    progress_percent: Callable[[MetricUpdate], int | None] = metric_progress
    paras: Callable[[str], list[list[str]]] = paragraphs
    kind_labels: Mapping[str, str] = field(default_factory=lambda: dict(KIND_LABELS))
    status_labels: Mapping[str, str] = field(default_factory=lambda: dict(STATUS_LABELS))
    zone: tzinfo = UTC

    def when(self, moment: datetime) -> str:
        """``03 Nov 2026, 09:05 (America/New_York)``: in the page's zone, named."""
        return local_time(moment, self.zone)
