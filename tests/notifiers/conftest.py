"""Builders of events and deliveries for the notifier tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

import pytest

from schemas.delivery import Delivery
from schemas.events import Event, new_event
from schemas.targets import EmailTarget, SlackTarget, WebhookTarget

SAMPLES: dict[str, dict[str, Any]] = {
    "metric": {
        "indicator": "Children active 60 minutes a day",
        "value": 42.5,
        "unit": "%",
        "period": "2026-10",
        "baseline": 30,
        "target": 60,
        "note": "Up after the walking-school-bus pilot.\n\nData: school survey.",
    },
    "milestone": {
        "title": "Farmers market opens",
        "status": "at-risk",
        "due": "2026-11-01",
        "note": "Permit still pending.",
    },
    "meeting": {
        "title": "Steering committee",
        "held_at": "2026-10-01T10:00:00+02:00",
        "attendees": ["Ann Lee", "Bo Diaz"],
        "summary": "We reviewed the dashboard.\nAll partners reported.",
        "decisions": ["Adopt the shared BMI indicator", "Meet monthly"],
        "action_items": [
            {"task": "Draft the data agreement", "owner": "Ann Lee", "due": "2026-10-15"},
            {"task": "Invite the school board", "owner": "Bo Diaz"},
        ],
    },
    "update": {
        "title": "New partner: Somerville YMCA",
        "body": "We welcome the YMCA.\n\nThey join the nutrition working group.",
        "url": "https://example.org/news/ymca?ref=hub&x=1",
    },
}


def make_event(
    kind: str = "update", *, event_id: str = "01J0000000000000000000TEST", **data: Any
) -> Event:
    """An event of ``kind`` from the sample data, with fields overridden by ``data``."""
    return new_event(
        kind,
        "somerville",
        "shape-up",
        {**SAMPLES[kind], **data},
        event_id=event_id,
        time=datetime(2026, 10, 2, 9, 30, tzinfo=UTC),
    )


class DeliveryFactory(Protocol):
    def __call__(
        self,
        kind: str = "update",
        channel: str = "email",
        *,
        event: Event | None = None,
        address: str = "ann@example.org",
        name: str | None = "Ann Lee",
        conversation: str = "C0123ABC",
        timezone: str = "UTC",
        **data: Any,
    ) -> Delivery: ...


def build_delivery(
    kind: str = "update",
    channel: str = "email",
    *,
    event: Event | None = None,
    address: str = "ann@example.org",
    name: str | None = "Ann Lee",
    conversation: str = "C0123ABC",
    timezone: str = "UTC",
    **data: Any,
) -> Delivery:
    """A validated delivery of a sample event to one target."""
    target: EmailTarget | SlackTarget | WebhookTarget
    if channel == "email":
        target = EmailTarget(address=address, name=name)
    elif channel == "slack":
        target = SlackTarget(conversation=conversation)
    else:
        target = WebhookTarget(url="https://hooks.example.org/in")
    return Delivery(
        event=event or make_event(kind, **data),
        recipient="ann",
        recipient_name=name,
        target=target,
        timezone=timezone,
    )


@pytest.fixture
def make_delivery() -> DeliveryFactory:
    """Factory of deliveries: ``make_delivery("metric", "slack", value=3)``."""
    return build_delivery
