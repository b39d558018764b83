"""Digests fired by real NATS message schedules, through every process as users run them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.bus import DIGEST_CONSUMER, SCHEDULES, Bus, EmbeddedNats
from tests.e2e.conftest import Hub
from tests.fakes.smtp import SmtpSink

pytestmark = pytest.mark.e2e


async def _every_second(url: str, recipient: str) -> None:
    """Replace the recipient's daily cron with a tick every second (the server fires it)."""
    bus = await Bus.connect(url)
    try:
        await bus.js.publish(
            f"schedule.{recipient}",
            b"",
            headers={
                "Nats-Schedule": "@every 1s",
                "Nats-Schedule-Target": f"digest-tick.{recipient}",
            },
        )
    finally:
        await bus.close()


async def _ticks_handled(url: str) -> int:
    bus = await Bus.connect(url)
    try:
        info = await bus.js.consumer_info(SCHEDULES, DIGEST_CONSUMER)
        return int(info.ack_floor.consumer_seq)
    finally:
        await bus.close()


def _wait_ticks(url: str, more: int, timeout: float = 20) -> None:
    start = asyncio.run(_ticks_handled(url))
    deadline = time.monotonic() + timeout
    while asyncio.run(_ticks_handled(url)) < start + more:
        assert time.monotonic() < deadline, "the server stopped firing ticks"
        time.sleep(0.2)


def _post_three(h: Hub) -> None:
    h.cli(
        "post",
        "metric",
        "--initiative",
        "somerville",
        "--topic",
        "bmi",
        "--indicator",
        "Children with obesity",
        "--value",
        "17",
        "--unit",
        "%",
        "--baseline",
        "20",
        "--target",
        "15",
        "--direction",
        "decrease",
    )
    h.cli(
        "post",
        "milestone",
        "--initiative",
        "somerville",
        "--topic",
        "market",
        "--title",
        "Farmers' market opens",
        "--status",
        "reached",
    )
    h.cli(
        "post",
        "update",
        "--initiative",
        "somerville",
        "--topic",
        "news",
        "--title",
        "<b>Walking school bus</b> starts",
        "--body",
        "Mondays and Fridays.",
    )


@pytest.mark.parametrize("digest_processes", [1, 2])
def test_one_digest_per_period_from_server_ticks(
    tmp_path: Path,
    hub_env: dict[str, str],
    nats_server: EmbeddedNats,
    smtp_sink: SmtpSink,
    digest_processes: int,
) -> None:
    env = {**hub_env, "IMPACTBUS_NATS_URL": nats_server.url}
    data = tmp_path / ".impactbus"
    procs = [
        Hub(env=env, data_dir=data).start("run", name)
        for name in ("router", "email", *(["digest"] * digest_processes))
    ]
    try:
        h = procs[0]
        h.cli(
            "recipients",
            "add",
            "ana",
            "--email",
            "ana@school.example",
            "--timezone",
            "America/New_York",
            "--digest",
            "daily@08:00",
        )
        h.cli("subscribe", "ana", "impact.somerville.>", "--via", "email", "--mode", "digest")
        _post_three(h)
        h.wait_quiet()
        assert smtp_sink.messages == []  # digest subscribers get nothing per event
        asyncio.run(_every_second(nats_server.url, "ana"))
        [digest] = smtp_sink.wait_for(1, timeout=30)
        body = digest.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        for expected in ("Children with obesity", "Farmers' market opens", "Walking school bus"):
            assert expected in text
        html_part = digest.get_body(("html",))
        assert html_part is not None
        assert "&lt;b&gt;Walking school bus&lt;/b&gt;" in html_part.get_content()
        # More ticks in the same period: still exactly one digest, and the items are gone.
        _wait_ticks(nats_server.url, 3)
        h.wait_quiet()
        assert len(smtp_sink.messages) == 1
        preview = h.cli("digest", "preview", "ana").stdout
        assert "nothing new" in preview
        # A new item waits for the next period; send-now delivers it at once.
        h.cli("post", "update", "--initiative", "somerville", "--topic", "news", "--title", "Later")
        h.wait_quiet()
        assert "Later" in h.cli("digest", "preview", "ana").stdout
        h.cli("digest", "send-now", "ana")
        second = smtp_sink.wait_for(2)[1]
        assert "Later" in str(second.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    finally:
        for p in procs:
            p.stop()
