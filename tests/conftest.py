"""Real servers for the tests: a fresh nats-server per test (free port, temp store).

``nats_server`` starts one for the test and ``nats_factory`` more; all of a test's servers
are stopped when it ends (idle JetStream servers left running until the session ends
cost the rest of the suite CPU). Never the default NATS port on 127.0.0.1: that is the
machine's own NATS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from services.bus import Bus, EmbeddedNats, NatsSettings, free_port
from tests.fakes.slack import slack_fake  # noqa: F401 - fixture
from tests.fakes.smtp import smtp_sink  # noqa: F401 - fixture
from tests.fakes.webhook import webhook_sink, webhook_sink_factory  # noqa: F401 - fixtures


@pytest.fixture
def nats_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], EmbeddedNats]]:
    """Start fresh nats-servers (JetStream, temp store, free port); stopped after the test."""
    started: list[EmbeddedNats] = []

    def start() -> EmbeddedNats:
        store: Path = tmp_path_factory.mktemp("nats")
        server = EmbeddedNats(store_dir=store, port=free_port()).start()
        assert server.port != 4222
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def nats_server(nats_factory: Callable[[], EmbeddedNats]) -> EmbeddedNats:
    """A fresh nats-server for one test (starts in milliseconds)."""
    return nats_factory()


@pytest.fixture
async def bus(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    """A connected bus with the hub's topology declared."""
    b = await Bus.connect(nats_server.url, NatsSettings(url=nats_server.url))
    await b.ensure_topology()
    yield b
    await b.close()
