"""Several copies of each service share the work: every delivery exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from schemas.events import new_event
from services.bus import Bus, EmbeddedNats
from services.pipeline.ingest import publish_events
from tests.e2e.conftest import Hub
from tests.fakes.smtp import SmtpSink

pytestmark = pytest.mark.e2e
EVENTS = 5_000


async def _publish(url: str) -> None:
    bus = await Bus.connect(url)
    try:
        events = [
            new_event(
                "metric",
                "somerville",
                f"t{i % 50}",
                {"indicator": "Farmers' market visits", "value": float(i)},
                event_id=f"scale-{i}",
                source="urn:test",
            )
            for i in range(EVENTS)
        ]
        for i in range(0, EVENTS, 500):
            await publish_events(bus, events[i : i + 500])
    finally:
        await bus.close()


@pytest.mark.timeout(300)
def test_two_routers_and_three_email_workers_deliver_each_event_once(
    tmp_path: Path, hub_env: dict[str, str], nats_server: EmbeddedNats, smtp_sink: SmtpSink
) -> None:
    env = {**hub_env, "IMPACTBUS_NATS_URL": nats_server.url}
    data = tmp_path / ".impactbus"
    procs = [
        Hub(env=env, data_dir=data).start("run", name)
        for name in ("router", "router", "email", "email", "email")
    ]
    try:
        h = procs[0]
        h.cli("recipients", "add", "maria", "--email", "maria@school.example")
        h.cli("subscribe", "maria", "impact.somerville.metric.>", "--via", "email")
        asyncio.run(_publish(nats_server.url))
        smtp_sink.wait_for(EVENTS, timeout=240)
        h.wait_quiet(timeout=60)
        ids = Counter(str(m["Message-ID"]) for m in smtp_sink.messages)
        assert len(ids) == EVENTS, "every event delivered"
        assert max(ids.values()) == 1, "no event delivered twice"
        # the work really was shared: every worker sent some
        status = h.cli("status").stdout
        assert "email 0/0" in status
    finally:
        for p in procs:
            p.stop()
