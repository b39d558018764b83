"""Web fixtures: a real hub in the test's event loop, on the test's own nats-server.

``web_hub`` runs :func:`services.runtime.hub.serve` with the API (and so the web pages), the
router and the email and Slack workers. No SMTP relay or Slack token is configured, so
both channels go to the dev outbox, as on a fresh machine. The data dir is the test's
temp dir; the secret key is generated there on first use, as in production.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.directory import Recipient, Subscription
from schemas.events import Event, new_event
from services.bus import EVENTS, Bus, EmbeddedNats, NatsSettings, free_port
from services.bus.outbox import read_outbox
from services.config import HubSettings, Runtime
from services.directory.auth import create_token
from services.directory.links import LinkSigner
from services.directory.records import Directory
from services.pipeline.ingest import publish_event
from services.runtime.hub import serve

START_TIMEOUT_S = 15.0


@dataclass
class WebHub:
    """A running hub and helpers to drive it."""

    url: str
    rt: Runtime
    client: httpx.AsyncClient
    directory: Directory
    signer: LinkSigner

    @property
    def bus(self) -> Bus:
        return self.rt.bus

    async def token(
        self, role: str = "backbone", initiatives: tuple[str, ...] = ("somerville",)
    ) -> str:
        _, token = await create_token(self.bus, role, list(initiatives))
        return token

    async def person(
        self, rid: str = "maria", *patterns: str, channel: str = "email", **fields: Any
    ) -> tuple[Recipient, list[Subscription]]:
        fields.setdefault("email", f"{rid}@school.example")
        recipient = await self.directory.add_recipient(id=rid, **fields)
        subs = [
            await self.directory.subscribe(rid, p, channel)  # type: ignore[arg-type]
            for p in (patterns or ("impact.somerville.>",))
        ]
        return recipient, subs

    async def post(
        self, kind: str = "milestone", topic: str = "farmers-market", **data: Any
    ) -> Event:
        if kind == "milestone":
            data.setdefault("title", "Farmers' market opens")
            data.setdefault("status", "reached")
        event = new_event(kind, data.pop("initiative", "somerville"), topic, data)
        await publish_event(self.bus, event)
        return event

    async def outbox(self, channel: str | None = None) -> list[dict[str, Any]]:
        return await read_outbox(self.bus.js, channel, 200)

    async def wait_outbox(
        self, count: int, channel: str | None = None, timeout: float = 10
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            entries = await self.outbox(channel)
            if len(entries) >= count:
                return entries
            assert time.monotonic() < deadline, f"outbox has {len(entries)} of {count}: {entries}"
            await asyncio.sleep(0.05)

    async def wait_quiet(self, timeout: float = 10) -> None:
        """Until the router and the delivery workers have nothing pending."""
        deadline = time.monotonic() + timeout
        while True:
            busy = 0
            for stream, name in (
                ("EVENTS", "router"),
                ("DELIVERIES", "email"),
                ("DELIVERIES", "slack"),
            ):
                info = await self.bus.js.consumer_info(stream, name)
                busy += (info.num_pending or 0) + (info.num_ack_pending or 0)
            if not busy:
                return
            assert time.monotonic() < deadline, "hub still busy"
            await asyncio.sleep(0.05)

    async def events(self) -> int:
        return int((await self.bus.js.stream_info(EVENTS)).state.messages)

    async def login(self, client: httpx.AsyncClient | None = None, role: str = "backbone") -> str:
        """Sign ``client`` (default: the hub's) in with a new token; return its CSRF value."""
        client = client or self.client
        token = await self.token(role)
        r = await client.post("/login", data={"token": token, "next": "/post"})
        assert r.status_code == 303, r.text
        page = await client.get("/post")
        marker = 'name="csrf" value="'
        start = page.text.index(marker) + len(marker)
        return page.text[start : page.text.index('"', start)]


def outbox_env(monkeypatch: pytest.MonkeyPatch, data_dir: Path, port: int) -> None:
    """Environment of a hub on embedded defaults (dev outbox) in ``data_dir``."""
    for key in (
        "IMPACTBUS_SMTP_HOST",
        "IMPACTBUS_SLACK_TOKEN",
        "IMPACTBUS_SECRET_KEY",
        "IMPACTBUS_PUBLIC_URL",
        "IMPACTBUS_WEB_PUBLIC",
        "IMPACTBUS_INITIATIVES",
        "IMPACTBUS_TIMEZONE",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("IMPACTBUS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("IMPACTBUS_HTTP_PORT", str(port))
    monkeypatch.setenv("IMPACTBUS_INITIATIVES", '{"somerville": "Shape Up Somerville"}')
    monkeypatch.setenv("IMPACTBUS_RETRY_BASE_S", "0.05")


@pytest.fixture
def hub_timezone() -> str:
    """``IMPACTBUS_TIMEZONE`` of ``web_hub``; a test picks another with
    ``@pytest.mark.parametrize("hub_timezone", ["America/New_York"])``."""
    return "UTC"


@pytest.fixture
async def web_hub(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_timezone: str
) -> AsyncIterator[WebHub]:
    port = free_port()
    outbox_env(monkeypatch, tmp_path / ".impactbus", port)
    monkeypatch.setenv("IMPACTBUS_TIMEZONE", hub_timezone)
    hub = HubSettings()
    ready: asyncio.Future[Runtime] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            ["api", "router", "email", "slack"],
            hub=hub,
            nats=NatsSettings(url=nats_server.url),
            announce=lambda _: None,
            ready=ready.set_result,
        )
    )
    rt = await asyncio.wait_for(asyncio.shield(ready), START_TIMEOUT_S)
    url = f"http://127.0.0.1:{port}"
    client = httpx.AsyncClient(base_url=url, timeout=15)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert not task.done(), task
        try:
            if (await client.get("/healthz")).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the API did not start"
        await asyncio.sleep(0.02)
    web = WebHub(url, rt, client, await Directory.open(rt.bus), LinkSigner.from_settings(hub))
    yield web
    rt.stop.set()
    await asyncio.wait_for(task, 30)
    await client.aclose()
