"""The dev outbox on a real nats-server, and the registry's choice of notifiers."""

from __future__ import annotations

import json

import pytest

from notifiers.base import Links, Notifier, TransientDeliveryError, no_links
from notifiers.email import EmailNotifier, compose_email
from notifiers.outbox import OutboxNotifier
from notifiers.registry import Collaborators, build_notifiers
from notifiers.settings import WebhookSettings
from notifiers.slack import SlackNotifier, compose_slack
from notifiers.webhook import SettingsSecretStore, WebhookNotifier
from schemas.errors import BusUnavailableError, InvalidInputError
from services.bus import Bus
from services.bus.outbox import outbox_publisher, read_outbox
from services.config import load_channel_settings
from tests.notifiers.conftest import DeliveryFactory

SENDER = "impactbus <noreply@impactbus.invalid>"


def links(delivery: object) -> Links:
    return Links(unsubscribe="https://hub.example.org/u/tok")


async def test_email_is_recorded_exactly_as_composed(
    bus: Bus, make_delivery: DeliveryFactory
) -> None:
    delivery = make_delivery("milestone")
    outbox = OutboxNotifier(outbox_publisher(bus.nc, 5), "email", links, SENDER)
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
    async with OutboxNotifier(outbox_publisher(bus.nc, 5), "slack", no_links, SENDER) as outbox:
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
    email = OutboxNotifier(outbox_publisher(bus.nc, 5), "email", no_links, SENDER)
    slack = OutboxNotifier(outbox_publisher(bus.nc, 5), "slack", no_links, SENDER)
    for i in range(5):
        await email.send(make_delivery("update", address=f"p{i}@example.org"))
        await slack.send(make_delivery("update", "slack", conversation=f"C{i}"))

    everything = await read_outbox(bus.js)
    assert [e["channel"] for e in everything] == ["email", "slack"] * 5
    emails = await read_outbox(bus.js, "email", limit=3)
    assert [e["to"] for e in emails] == [f"Ann Lee <p{i}@example.org>" for i in (2, 3, 4)]
    assert [e["conversation"] for e in await read_outbox(bus.js, "slack", limit=2)] == ["C3", "C4"]


async def test_a_retried_job_is_recorded_once(bus: Bus, make_delivery: DeliveryFactory) -> None:
    outbox = OutboxNotifier(outbox_publisher(bus.nc, 5), "email", no_links, SENDER)
    delivery = make_delivery()
    await outbox.send(delivery)
    await outbox.send(delivery)  # same job id -> Nats-Msg-Id dedup
    assert len(await read_outbox(bus.js, "email")) == 1


async def test_empty_outbox(bus: Bus) -> None:
    assert await read_outbox(bus.js) == []


def test_unknown_channel_has_no_outbox(make_delivery: DeliveryFactory) -> None:
    with pytest.raises(InvalidInputError):
        OutboxNotifier(Recorder(), "webhook", no_links, SENDER)


class Recorder:
    """A publish function that keeps what it was handed (or fails like a lost bus)."""

    def __init__(self, fail: bool = False) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self.fail = fail

    async def __call__(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        if self.fail:
            raise BusUnavailableError("NATS is not answering")
        self.published.append((subject, payload, headers))


def fake_collaborators() -> Collaborators:
    return Collaborators(
        links=no_links,
        publish=Recorder(),
        secrets=SettingsSecretStore(WebhookSettings()),
    )


async def test_the_outbox_hands_its_record_to_the_publish_it_was_given(
    make_delivery: DeliveryFactory,
) -> None:
    delivery = make_delivery("milestone")
    publish = Recorder()
    await OutboxNotifier(publish, "email", links, SENDER).send(delivery)
    [(subject, payload, headers)] = publish.published
    assert subject == "outbox.email"
    assert headers == {"Nats-Msg-Id": delivery.job_id}
    assert json.loads(payload)["to"] == "Ann Lee <ann@example.org>"


async def test_a_bus_that_cannot_store_is_a_transient_failure(
    make_delivery: DeliveryFactory,
) -> None:
    outbox = OutboxNotifier(Recorder(fail=True), "slack", no_links, SENDER)
    with pytest.raises(TransientDeliveryError, match="NATS is not answering"):
        await outbox.send(make_delivery("meeting", "slack"))


async def test_registry_falls_back_to_the_outbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMPACTBUS_SMTP_HOST", raising=False)
    monkeypatch.delenv("IMPACTBUS_SLACK_TOKEN", raising=False)
    notifiers = build_notifiers(load_channel_settings(), fake_collaborators())
    assert isinstance(notifiers["email"], OutboxNotifier)
    assert isinstance(notifiers["slack"], OutboxNotifier)
    assert notifiers["email"].channel == "email"
    assert notifiers["slack"].channel == "slack"
    for notifier in notifiers.values():
        assert isinstance(notifier, Notifier)
        await notifier.aclose()


async def test_registry_uses_configured_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPACTBUS_SMTP_HOST", "smtp.example.org")
    monkeypatch.setenv("IMPACTBUS_SLACK_TOKEN", "xoxb-test")
    notifiers = build_notifiers(load_channel_settings(), fake_collaborators())
    assert isinstance(notifiers["email"], EmailNotifier)
    assert isinstance(notifiers["slack"], SlackNotifier)
    assert isinstance(notifiers["webhook"], WebhookNotifier)
    for notifier in notifiers.values():
        await notifier.aclose()
