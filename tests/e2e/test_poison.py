"""Poison messages through the real hub: dead-lettered once, cut to fit, and the hub goes on.

300 KB of ``0xff`` bytes is not an event and not a job; its dead letter, JSON-escaped,
would be six times larger than the server's ``max_payload``. It is dead-lettered with a
cut payload, its size and its hash, and the event published after it is delivered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable

import pytest

from services.bus import Bus, NatsSettings
from tests.e2e.conftest import Hub
from tests.fakes.smtp import SmtpSink

pytestmark = pytest.mark.e2e

POISON = b"\xff" * 300 * 1024


def eventually(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_300kb_poison_event_and_job_are_dead_lettered_cut_and_the_hub_keeps_delivering(
    hub: Hub, smtp_sink: SmtpSink
) -> None:
    hub.cli("recipients", "add", "maria", "--email", "maria@school.example")
    hub.cli("subscribe", "maria", "impact.x.>", "--via", "email")

    async def publish_poison() -> None:
        bus = await Bus.connect(hub.nats_url, NatsSettings(url=hub.nats_url), reconnect=False)
        try:
            await bus.js.publish("impact.x.metric.c11", POISON)
            await bus.js.publish("deliver.email.x", POISON)
        finally:
            await bus.close()

    asyncio.run(publish_poison())
    hub.cli(
        "post", "update", "--initiative", "x", "--topic", "market",
        "--title", "After the poison", "--id", "after",
    )  # fmt: skip
    smtp_sink.wait_for(1)
    hub.wait_quiet()
    out = hub.cli("dead", "list", "--json").stdout
    letters = sorted(
        (json.loads(line) for line in out.splitlines() if line.strip()),
        key=lambda d: str(d["original_subject"]),
    )
    assert [(d["original_subject"], d["reason"]) for d in letters] == [
        ("deliver.email.x", "invalid"),
        ("impact.x.metric.c11", "invalid"),
    ]
    for d in letters:
        assert d["payload_truncated"] is True
        assert d["payload_bytes"] == len(POISON)
        assert d["payload_sha256"] == hashlib.sha256(POISON).hexdigest()
    listed = hub.cli("dead", "list").stdout
    assert listed.count("payload truncated: 307,200 bytes") == 2
    shown = json.loads(hub.cli("dead", "show", str(letters[0]["seq"])).stdout)
    assert shown["payload_bytes"] == len(POISON)
    [mail] = smtp_sink.wait_for(1)
    assert "After the poison" in str(mail["Subject"])
