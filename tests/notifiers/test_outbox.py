"""The dev outbox on a real nats-server, and the registry's choice of notifiers."""

from __future__ import annotations

import pytest

from notifiers.base import Links, Notifier, no_links
from notifiers.email import EmailNotifier, compose_email
from notifiers.outbox import OutboxNotifier, read_outbox
from notifiers.registry import build_notifiers
from notifiers.slack import SlackNotifier, compose_slack
from notifiers.webhook import WebhookNotifier
from schemas.errors import InvalidInputError
from services.bus import Bus
from tests.notifiers.conftest import DeliveryFactory

SENDER = "impactbus <noreply@impactbus.invalid>"


def links(delivery: object) -> Links:
    return Links(unsubscribe="https://hub.example.org/u/tok")


async def test_email_is_recorded_exactly_as_composed(
    bus: Bus, make_delivery: DeliveryFactory
) -> None:
    delivery = make_delivery("milestone")
    outbox = OutboxNotifier(bus.js, "email", links, SENDER)
    async with outbox:
        result = await outbox.send(delivery)

    [entry] = await read_outbox(bus.js, "email")
    expected = compose_email(delivery, links(delivery), SENDER)
    assert result.outcome == "outbox"
    assert result.channel == "email"
    assert result.provider_id == expected["Message-ID"] == entry["message_id"]
    assert entry["channel"] == "email"
    assert entry["recipient"] == "ann"
    assert entry["to"] == "Ann Lee <ann@example.org>"
    assert entry["subject"] == expected["Subject"]
    assert entry["job_id"] == delivery.job_id
    assert entry["event_id"] == delivery.event.id
    assert isinstance(entry["text"], str)
    assert "At risk" in entry["text"]
    assert isinstance(entry["html"], str)
    assert entry["html"].startswith("<!DOCTYPE html>")
    assert isinstance(entry["headers"], dict)
    assert entry["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert isinstance(entry["sent_at"], str)


async def test_slack_is_recorded_exactly_as_composed(
    bus: Bus, make_delivery: DeliveryFactory
) -> None:
    delivery = make_delivery("meeting", "slack")
    async with OutboxNotifier(bus.js, "slack", no_links, SENDER) as outbox:
        result = await outbox.send(delivery)

    [entry] = await read_outbox(bus.js, "slack")
    expected = compose_slack(delivery, Links())
    assert result.outcome == "outbox"
    assert result.channel == "slack"
    assert entry["conversation"] == "C0123ABC"
    assert entry["text"] == expected["text"]
    assert entry["blocks"] == expected["blocks"]
    assert entry["job_id"] == delivery.job_id


async def test_read_outbox_filters_orders_and_limits(
    bus: Bus, make_delivery: DeliveryFactory
) -> None:
    email = OutboxNotifier(bus.js, "email", no_links, SENDER)
    slack = OutboxNotifier(bus.js, "slack", no_links, SENDER)
    for i in range(5):
        await email.send(make_delivery("update", address=f"p{i}@example.org"))
        await slack.send(make_delivery("update", "slack", conversation=f"C{i}"))

    everything = await read_outbox(bus.js)
    assert [e["channel"] for e in everything] == ["email", "slack"] * 5
    emails = await read_outbox(bus.js, "email", limit=3)
    assert [e["to"] for e in emails] == [f"Ann Lee <p{i}@example.org>" for i in (2, 3, 4)]
    assert [e["conversation"] for e in await read_outbox(bus.js, "slack", limit=2)] == ["C3", "C4"]


async def test_a_retried_job_is_recorded_once(bus: Bus, make_delivery: DeliveryFactory) -> None:
    outbox = OutboxNotifier(bus.js, "email", no_links, SENDER)
    delivery = make_delivery()
    await outbox.send(delivery)
    await outbox.send(delivery)  # same job id -> Nats-Msg-Id dedup
    assert len(await read_outbox(bus.js, "email")) == 1


async def test_empty_outbox(bus: Bus) -> None:
    assert await read_outbox(bus.js) == []


def test_unknown_channel_has_no_outbox(make_delivery: DeliveryFactory) -> None:
    with pytest.raises(InvalidInputError):
        OutboxNotifier(None, "webhook", no_links, SENDER)  # type: ignore[arg-type]


async def test_registry_falls_back_to_the_outbox(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMPACTBUS_SMTP_HOST", raising=False)
    monkeypatch.delenv("IMPACTBUS_SLACK_TOKEN", raising=False)
    notifiers = build_notifiers(bus.js, links=no_links)
    assert isinstance(notifiers["email"], OutboxNotifier)
    assert isinstance(notifiers["slack"], OutboxNotifier)
    assert notifiers["email"].channel == "email"
    assert notifiers["slack"].channel == "slack"
    for notifier in notifiers.values():
        assert isinstance(notifier, Notifier)
        await notifier.aclose()


async def test_registry_uses_configured_channels(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPACTBUS_SMTP_HOST", "smtp.example.org")
    monkeypatch.setenv("IMPACTBUS_SLACK_TOKEN", "xoxb-test")
    notifiers = build_notifiers(bus.js, links=no_links)
    assert isinstance(notifiers["email"], EmailNotifier)
    assert isinstance(notifiers["slack"], SlackNotifier)
    assert isinstance(notifiers["webhook"], WebhookNotifier)
    for notifier in notifiers.values():
        await notifier.aclose()
