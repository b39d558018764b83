"""The declared topology and an existing install: updated where NATS can, refused where not."""

from __future__ import annotations

import logging

import pytest
from nats.js import api

from schemas.errors import TopologyMismatchError
from services.bus import DIGESTS, EVENTS, KV_WEBHOOK_SECRETS, OUTBOX, Bus, NatsSettings
from services.bus.embedded import EmbeddedNats


async def test_changed_settings_update_an_existing_stream(
    nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    first = await Bus.connect(nats_server.url, NatsSettings(url=nats_server.url))
    await first.ensure_topology()
    await first.close()

    changed = NatsSettings(url=nats_server.url, events_max_age_days=30, events_max_bytes=50_000_000)
    changed.duplicate_window_s = 300
    bus = await Bus.connect(nats_server.url, changed)
    try:
        with caplog.at_level(logging.INFO, logger="impactbus.bus"):
            await bus.ensure_topology()
        events = (await bus.js.stream_info(EVENTS)).config
        assert events.max_age == 30 * 86_400
        assert events.max_bytes == 50_000_000
        assert events.duplicate_window == 300
        assert "stream EVENTS updated" in caplog.text
        assert "max_bytes -1 -> 50000000" in caplog.text

        # a setting changed by hand on the server is put back: direct gets on DIGESTS
        digests = (await bus.js.stream_info(DIGESTS)).config
        digests.allow_direct = False
        await bus.js.update_stream(digests)
        await bus.ensure_topology()
        assert (await bus.js.stream_info(DIGESTS)).config.allow_direct is True

        # declaring the same again changes nothing and says nothing
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="impactbus.bus"):
            await bus.ensure_topology()
        assert "updated" not in caplog.text
    finally:
        await bus.close()


async def test_a_change_nats_refuses_stops_the_hub_with_what_differs(
    nats_server: EmbeddedNats,
) -> None:
    bus = await Bus.connect(nats_server.url, NatsSettings(url=nats_server.url))
    try:
        # an install whose OUTBOX was created in memory: storage cannot change in place
        await bus.js.add_stream(
            api.StreamConfig(name=OUTBOX, subjects=["outbox.>"], storage=api.StorageType.MEMORY)
        )
        with pytest.raises(TopologyMismatchError) as raised:
            await bus.ensure_topology()
        message = str(raised.value)
        assert "stream OUTBOX" in message
        assert "storage memory -> file" in message
        assert "nats stream rm OUTBOX" in message
        assert raised.value.__cause__ is None
    finally:
        await bus.close()


async def test_replicas_beyond_a_single_server_are_refused_in_plain_words(
    nats_server: EmbeddedNats,
) -> None:
    first = await Bus.connect(nats_server.url, NatsSettings(url=nats_server.url))
    await first.ensure_topology()
    await first.close()
    bus = await Bus.connect(nats_server.url, NatsSettings(url=nats_server.url, stream_replicas=3))
    try:
        with pytest.raises(TopologyMismatchError, match=r"num_replicas 1 -> 3"):
            await bus.ensure_topology()
    finally:
        await bus.close()


async def test_the_webhook_secrets_bucket_is_declared(bus: Bus) -> None:
    status = await (await bus.kv(KV_WEBHOOK_SECRETS)).status()
    assert status.bucket == KV_WEBHOOK_SECRETS
    assert status.history == 5
