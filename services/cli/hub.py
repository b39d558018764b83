"""The commands that run the hub: ``up``, ``run`` and ``demo``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from schemas.errors import (
    BusUnavailableError,
    ImpactbusError,
    InvalidInputError,
)
from services.cli.base import fail


def up() -> None:
    """Run the whole hub in one process on its embedded defaults, until Ctrl-C.

    Starts a real nats-server (store under ./.impactbus/) unless IMPACTBUS_NATS_URL is set,
    declares the streams and runs the router, the delivery workers and the web/API.
    """
    from services.runtime.hub import SERVICES

    _serve(list(SERVICES), embedded=True)


def run_service(
    services: Annotated[
        list[str], typer.Argument(help="one or more of: api, router, email, slack, webhook, digest")
    ],
) -> None:
    """Run some services against IMPACTBUS_NATS_URL (or the running hub's NATS).

    Scale out by running more copies: copies share the work through durable consumers.
    """
    from services.runtime.hub import SERVICES

    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        fail(f"unknown service {unknown[0]!r}: use one of {', '.join(SERVICES)}")
    _serve(list(dict.fromkeys(services)), embedded=False)


def _serve(services: list[str], *, embedded: bool = True) -> None:
    from services.config import load_hub_settings
    from services.runtime.hub import serve
    from services.runtime.logs import setup_logging

    try:
        hub = load_hub_settings()  # a wrong IMPACTBUS_* value stops the start, in words
    except InvalidInputError as exc:
        fail(str(exc), 2)
    setup_logging(hub.log_format, hub.log_level)
    from services.bus import read_hub_file

    if embedded and read_hub_file(hub.data_dir):
        fail(f"a hub is already running in {hub.data_dir} (see {hub.data_dir}/hub.json)", 1)
    try:
        asyncio.run(
            serve(
                services,
                hub=hub,
                start_embedded=embedded,
                announce=lambda s: typer.echo(s, err=False),
                signin=embedded,
            )
        )
    except BusUnavailableError as exc:
        fail(str(exc), 3)
    except ImpactbusError as exc:
        fail(str(exc), 1)


def demo() -> None:
    """Run the hub on its embedded defaults, filled with two initiatives' story, until Ctrl-C."""
    from services.runtime.demo import run_demo

    run_demo()
