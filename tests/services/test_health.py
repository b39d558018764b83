"""Health endpoints and metrics of a process running services without the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from schemas.events import new_event
from services.api.probes import HealthSettings, run_health
from services.bus import Bus, free_port
from services.config import HubSettings, Runtime
from services.directory.records import Directory
from services.pipeline.ingest import publish_event
from services.runtime.hub import run_router


@pytest.fixture
async def running(bus: Bus) -> AsyncIterator[tuple[Runtime, str]]:
    port = free_port()
    rt = Runtime(bus=bus, hub=HubSettings(), stop=asyncio.Event())
    tasks = [
        asyncio.create_task(run_router(rt)),
        asyncio.create_task(run_health(rt, HealthSettings(port=port))),
    ]
    url = f"http://127.0.0.1:{port}"
    for _ in range(500):  # the router is up once it has loaded the directory
        if "router" in rt.counters:
            break
        await asyncio.sleep(0.01)
    assert "router" in rt.counters
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                await client.get(f"{url}/healthz")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.01)
    yield rt, url
    rt.stop.set()
    await asyncio.gather(*tasks)


async def test_probes_and_metrics(running: tuple[Runtime, str], bus: Bus) -> None:
    rt, url = running
    d = await Directory.open(bus)
    await d.add_recipient(id="maria", email="maria@school.example")
    await d.subscribe("maria", "impact.somerville.>", "email")
    await publish_event(bus, new_event("update", "somerville", "news", {"title": "Hi"}))
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/healthz")).json() == {"status": "ok"}
        assert (await client.get(f"{url}/readyz")).json() == {"status": "ready"}
        for _ in range(200):
            if rt.counters["router"]["jobs"] == 1:
                break
            await asyncio.sleep(0.01)
        text = (await client.get(f"{url}/metrics")).text
    assert "impactbus_router_routed_total 1.0" in text
    assert "impactbus_router_jobs_total 1.0" in text
    assert 'impactbus_consumer_pending{consumer="router",stream="EVENTS"} 0.0' in text
    assert 'impactbus_consumer_failures_total{consumer="router",outcome="dead"} 0.0' in text
    assert "impact.somerville" not in text  # labels by pattern, never by concrete subject


async def test_not_ready_while_nats_is_away(
    running: tuple[Runtime, str], bus: Bus, nats_server: object
) -> None:
    from services.bus import EmbeddedNats

    assert isinstance(nats_server, EmbeddedNats)
    _, url = running
    nats_server.kill()
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            r = await client.get(f"{url}/readyz")
            if r.status_code == 503:
                break
            await asyncio.sleep(0.02)
        assert r.status_code == 503
        assert r.json()["detail"] in ("NATS disconnected",) or "JetStream" in r.json()["detail"]
        assert (await client.get(f"{url}/healthz")).status_code == 200
