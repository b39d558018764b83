"""Per-target webhook secrets in KV: created on first use, rotated with a grace period."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from notifiers.settings import SecretStoreSettings, WebhookSettings
from notifiers.webhook import WebhookNotifier
from notifiers.webhook_signing import new_secret, verify
from schemas.delivery import Delivery
from schemas.directory import Recipient
from schemas.errors import BusUnavailableError, InvalidInputError, NotFoundError
from schemas.events import new_event
from schemas.targets import WebhookTarget
from services.bus import Bus, NatsSettings
from services.bus.embedded import EmbeddedNats
from services.bus.webhook_secrets import (
    KvSecretStore,
    create_secret,
    rotate_secret,
    show_secrets,
)
from services.directory.records import Directory
from tests.fakes.webhook import WebhookSink

TARGET = "webhook:https://crm.example.org/hook"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def store(bus: Bus, clock: Clock, shared: str = "") -> KvSecretStore:
    return KvSecretStore(
        bus,
        SecretStoreSettings(cache_s=0, rotation_grace_h=24),
        WebhookSettings(secret=shared).secrets,
        clock=clock,
    )


async def test_first_use_creates_one_secret_even_when_racing(bus: Bus) -> None:
    clock = Clock()
    stores = [store(bus, clock) for _ in range(5)]
    got = await asyncio.gather(*(s.get(TARGET) for s in stores))
    assert all(g == got[0] for g in got)
    [secret] = got[0]
    assert secret.startswith("whsec_")
    assert await stores[0].get("webhook:https://other.example.org/") != got[0]


async def test_rotation_signs_with_new_and_keeps_the_old_valid_for_the_grace(bus: Bus) -> None:
    clock = Clock()
    s = store(bus, clock)
    [old] = await s.get(TARGET)
    rotated = await s.rotate(TARGET)
    new = rotated.secrets[0].secret
    assert await s.get(TARGET) == [new, old]
    clock.now += timedelta(hours=23)
    assert await s.get(TARGET) == [new, old]
    clock.now += timedelta(hours=2)
    assert await s.get(TARGET) == [new]
    # a second rotation drops what already expired
    again = await s.rotate(TARGET, timedelta(0))
    assert [v.secret for v in again.secrets] == [again.secrets[0].secret, new]


async def test_the_shared_env_secret_is_the_fallback_and_stays_listed(bus: Bus) -> None:
    clock = Clock()
    shared = new_secret()
    s = store(bus, clock, shared)
    assert await s.get(TARGET) == [shared]
    assert await s.load(TARGET) is None  # nothing created while a shared secret exists
    own = (await s.ensure(TARGET)).secrets[0].secret
    assert await s.get(TARGET) == [own, shared]


async def test_a_bus_without_the_topology_is_said_in_plain_words(
    nats_server: EmbeddedNats,
) -> None:
    bare = await Bus.connect(nats_server.url, NatsSettings(url=nats_server.url))
    try:
        with pytest.raises(BusUnavailableError, match="no webhook_secrets bucket"):
            await store(bare, Clock()).load(TARGET)
    finally:
        await bare.close()


async def test_signatures_verify_with_either_secret_during_a_rotation(
    bus: Bus, webhook_sink: WebhookSink
) -> None:
    clock = Clock()
    url = webhook_sink.url_for("/hook")
    key = WebhookTarget(url=url).key
    s = store(bus, clock)
    [old] = await s.get(key)
    new = (await s.rotate(key)).secrets[0].secret
    notifier = WebhookNotifier(WebhookSettings(allow_loopback=True), secrets=s)
    event = new_event("update", "somerville", "news", {"title": "Hi"}, event_id="ev-1")
    async with notifier:
        await notifier.send(Delivery(event=event, recipient="crm", target=WebhookTarget(url=url)))
    [request] = webhook_sink.wait_for(1)
    assert len(request.headers["webhook-signature"].split()) == 2
    verify([old], request.headers, request.body)
    verify([new], request.headers, request.body)


async def test_recipient_level_show_create_and_rotate(bus: Bus) -> None:
    directory = await Directory.open(bus)
    await directory.put_recipient(Recipient(id="crm", webhook_url="https://crm.example.org/h"))
    await directory.put_recipient(Recipient(id="ann", email="ann@example.org"))
    entry, created = await show_secrets(bus, "crm")
    assert created
    assert await create_secret(bus, "crm") == entry.secrets[0].secret
    assert (await show_secrets(bus, "crm"))[1] is False
    rotated = await rotate_secret(bus, "crm")
    assert rotated.secrets[1].secret == entry.secrets[0].secret
    with pytest.raises(InvalidInputError, match="no webhook contact"):
        await create_secret(bus, "ann")
    with pytest.raises(NotFoundError, match="no recipient 'nobody'"):
        await rotate_secret(bus, "nobody")
    with pytest.raises(InvalidInputError, match="negative"):
        await rotate_secret(bus, "crm", timedelta(hours=-1))
