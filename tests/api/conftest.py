"""API fixtures: the app served by uvicorn over real HTTP, on the test's nats-server.

``api_factory(**settings)`` starts an API (its own free port, in the test's event loop)
on the ``bus`` fixture's server, or on another connection given as ``bus=``; every API
started is stopped through its runtime's ``stop`` event, as the hub stops it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.api import ApiSettings, run_api
from services.bus import EVENTS, Bus, free_port
from services.config import HubSettings, Runtime
from services.directory.auth import create_token

START_TIMEOUT_S = 10.0


@dataclass
class Api:
    """One running API and helpers to talk to it."""

    url: str
    bus: Bus
    rt: Runtime
    client: httpx.AsyncClient
    task: asyncio.Task[None]

    async def token(
        self,
        role: str = "backbone",
        initiatives: tuple[str, ...] = ("somerville",),
        recipient: str | None = None,
    ) -> str:
        """A new token's bearer string."""
        _, token = await create_token(self.bus, role, list(initiatives), recipient)
        return token

    async def count(self) -> int:
        """Messages in the EVENTS stream."""
        return int((await self.bus.js.stream_info(EVENTS)).state.messages)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def api_factory(bus: Bus) -> AsyncIterator[ApiFactory]:
    started: list[Api] = []

    async def start(*, on_bus: Bus | None = None, **settings: Any) -> Api:
        the_bus = on_bus or bus
        port = free_port()
        rt = Runtime(the_bus, HubSettings(http_host="127.0.0.1", http_port=port), asyncio.Event())
        task = asyncio.create_task(run_api(rt, settings=ApiSettings(**settings)))
        url = f"http://127.0.0.1:{port}"
        client = httpx.AsyncClient(base_url=url, timeout=15)
        api = Api(url, the_bus, rt, client, task)
        started.append(api)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert not task.done(), task.exception() if task.done() else None
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return api
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            await asyncio.sleep(0.02)

    yield start
    for api in started:
        api.rt.stop.set()
        await asyncio.wait_for(api.task, 20)
        await api.client.aclose()


@pytest.fixture
async def api(api_factory: ApiFactory) -> Api:
    return await api_factory()


@pytest.fixture
async def backbone(api: Api) -> str:
    """A backbone token of initiative somerville."""
    return await api.token("backbone", ("somerville",))
