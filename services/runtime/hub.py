"""Running services: all in one process (``impactbus up``) or one (``impactbus run X``).

Each service is a coroutine that runs until ``stop`` is set, then finishes in-flight work
and returns. The hub connects (starting the embedded nats-server when no URL is
configured), declares the topology, runs the chosen services and, on SIGINT/SIGTERM,
stops them, closes connections and stops the server it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

from notifiers.base import LinkMaker
from notifiers.registry import ChannelSettings
from schemas.errors import ImpactbusError
from schemas.targets import CHANNELS
from services.bus import (
    DELIVERIES,
    EVENTS,
    ROUTER_CONSUMER,
    Bus,
    EmbeddedNats,
    NatsSettings,
    port_is_free,
    remove_hub_file,
    resolve_nats_url,
    stop_orphaned_server,
    write_hub_file,
)
from services.bus.consumer import ConsumerStats, run_batches, run_each
from services.bus.failures import Failures
from services.config import HubSettings, Runtime, load_channel_settings
from services.pipeline.deliver import DeliveryWorker
from services.pipeline.retry import RetrySettings
from services.pipeline.router import Router

if TYPE_CHECKING:  # the web pages (FastAPI) are imported only by processes that serve them
    from services.web.state import WebSettings

log = logging.getLogger("impactbus.hub")

SERVICES: Final = ("api", "router", *CHANNELS, "digest")


async def run_router(rt: Runtime) -> None:
    """The router service."""
    failures = Failures(rt.bus.nc, "router", rt.hub.failure_policy)
    router = await Router.open(rt.bus, failures=failures)
    await router.start()
    rt.counters["router"] = router.counts
    stats = rt.stats.setdefault("router", ConsumerStats("router"))
    try:
        await run_batches(
            rt.bus,
            EVENTS,
            ROUTER_CONSUMER,
            router.handle,
            stop=rt.stop,
            batch=256,
            stats=stats,
            failures=failures,
        )
    finally:
        await router.stop()


def channel_service(channel: str, retry: RetrySettings) -> Callable[[Runtime], Awaitable[None]]:
    """The delivery-worker service of one channel, retrying as ``retry`` says for it."""
    policy = retry.for_channel(channel)

    async def run(rt: Runtime) -> None:
        from notifiers.registry import build_notifier
        from services.bus.notifiers import bus_collaborators

        using = bus_collaborators(rt.bus, rt.channels, rt.links)
        notifier = build_notifier(channel, rt.channels, using)
        async with notifier:
            worker = await DeliveryWorker.open(rt.bus, notifier, policy)
            rt.counters[channel] = worker.counts
            stats = rt.stats.setdefault(channel, ConsumerStats(channel))
            try:
                await run_each(
                    rt.bus,
                    DELIVERIES,
                    channel,
                    worker.handle,
                    stop=rt.stop,
                    max_in_flight=128,
                    stats=stats,
                    grace=rt.hub.shutdown_grace_s,
                    failures=worker.failures(),
                )
            finally:
                await worker.close()

    run.__name__ = f"run_{channel}"
    return run


def api_service(web: WebSettings) -> Callable[[Runtime], Awaitable[None]]:
    """The HTTP API and web pages (imported only by processes that serve them)."""

    async def run_api(rt: Runtime) -> None:
        from services.api import run_api as serve_api

        await serve_api(rt, web=web)

    return run_api


async def run_digest(rt: Runtime) -> None:
    """The digest service."""
    from services.digest.service import run_digest as serve_digest

    await serve_digest(rt)


def service_table(
    retry: RetrySettings, web: WebSettings
) -> dict[str, Callable[[Runtime], Awaitable[None]]]:
    """Service name -> coroutine, with the settings the process read where it started."""
    table: dict[str, Callable[[Runtime], Awaitable[None]]] = {
        "api": api_service(web),
        "router": run_router,
        "digest": run_digest,
    }
    for channel in CHANNELS:
        table[channel] = channel_service(channel, retry)
    return table


async def serve(
    services: Sequence[str],
    *,
    hub: HubSettings | None = None,
    nats: NatsSettings | None = None,
    channels: ChannelSettings | None = None,
    retry: RetrySettings | None = None,
    web: WebSettings | None = None,
    start_embedded: bool = True,
    announce: Callable[[str], None] = print,
    ready: Callable[[Runtime], None] | None = None,
    signin: bool = False,
) -> None:
    """Run ``services`` until SIGINT/SIGTERM.

    Args:
        services: names from :data:`SERVICES`.
        hub: hub settings (data dir, HTTP port).
        nats: NATS settings; with no URL, ``start_embedded`` decides.
        channels: every channel's settings (SMTP, Slack, webhooks).
        retry: how delivery workers retry (``IMPACTBUS_RETRY_*``).
        web: the web pages' settings (``IMPACTBUS_WEB_*``, ``IMPACTBUS_INITIATIVES``).
            Each setting not given is read from the environment here, once for the
            process: the services get them from the runtime or as arguments.
        start_embedded: start the embedded nats-server when no URL is set (``up``);
            otherwise use the running hub's server (``run``).
        announce: prints the banner and shutdown lines.
        ready: called once everything runs (tests, benchmarks).
        signin: with the embedded server, print a new admin token for the web pages in
            the banner (:mod:`services.directory.signin`).

    Raises:
        BusUnavailableError: NATS cannot be reached or started.
        ImpactbusError: the HTTP port is taken, or a service failed (after the others
            were stopped and the embedded server with them).
    """
    hub = hub or HubSettings()
    nats = nats or NatsSettings()
    channels = channels or load_channel_settings()
    retry = retry or RetrySettings()
    if web is None:
        from services.web.state import WebSettings

        web = WebSettings()
    if "api" in services:
        _check_http_port(hub)
    url, embedded = await _nats_url(nats, hub, start_embedded=start_embedded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    failed: list[str] = []
    try:
        bus = await Bus.connect(url, nats, name=f"impactbus-{'+'.join(services)}")
        await bus.ensure_topology()
        rt = Runtime(bus=bus, hub=hub, stop=stop, links=_links(hub), channels=channels)
        table = service_table(retry, web)
        tasks: dict[str, asyncio.Task[None]] = {
            name: asyncio.create_task(_as_coroutine(table[name](rt)), name=name)
            for name in services
            if name in table
        }
        if "api" not in services:
            from services.api.probes import run_health

            tasks["health"] = asyncio.create_task(run_health(rt), name="health")
        if embedded is not None:
            assert embedded.process is not None
            write_hub_file(
                hub.data_dir,
                {
                    "nats_url": url,
                    "http": hub.base_url,
                    "store": str(embedded.store_dir),
                    "nats_pid": embedded.process.pid,
                },
            )
        token = None
        if signin and embedded is not None:
            from services.directory.signin import local_signin_token

            token = await local_signin_token(bus, hub.data_dir)
        announce(_banner(url, embedded, services, rt, hub, token=token))
        if ready is not None:
            ready(rt)
        failed = await _until_stopped(stop, tasks)
        announce("impactbus: stopping (finishing in-flight deliveries)...")
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await bus.close()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if embedded is not None:
            remove_hub_file(hub.data_dir)
            await asyncio.to_thread(embedded.stop)
    announce("impactbus: stopped")
    if failed:
        raise ImpactbusError("; ".join(failed))


def _check_http_port(hub: HubSettings) -> None:
    """Refuse to start when the web/API port is taken, before anything is started."""
    if (
        hub.http_port
        and ":" not in hub.http_host
        and not port_is_free(hub.http_port, hub.http_host)
    ):
        raise ImpactbusError(
            f"port {hub.http_port} is in use: set IMPACTBUS_HTTP_PORT to a free port "
            "(or stop what listens there)"
        )


async def _nats_url(
    nats: NatsSettings, hub: HubSettings, *, start_embedded: bool
) -> tuple[str, EmbeddedNats | None]:
    """The NATS URL to use, and the embedded server started for it (if one was)."""
    if nats.url:
        return nats.url, None
    if not start_embedded:
        return resolve_nats_url(nats, hub.data_dir), None
    stop_orphaned_server(hub.data_dir)
    embedded = EmbeddedNats(store_dir=hub.data_dir.resolve() / "nats")
    await asyncio.to_thread(embedded.start)
    return embedded.url, embedded


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable


async def _until_stopped(stop: asyncio.Event, tasks: dict[str, asyncio.Task[None]]) -> list[str]:
    """Wait for a signal or a service that ends; return what the failed services said."""
    failed: list[str] = []
    waiter = asyncio.create_task(stop.wait())
    while not stop.is_set():
        done, _ = await asyncio.wait([waiter, *tasks.values()], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is waiter:
                continue
            exc = task.exception()
            if exc is not None:
                log.error("service %s failed: %s", task.get_name(), exc)
                failed.append(f"{task.get_name()}: {exc}")
            stop.set()  # a service that ends on its own ends the hub: never run half a hub
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    return failed


def _links(hub: HubSettings) -> LinkMaker:
    from services.directory.links import link_maker

    return link_maker(hub)


def _destinations(services: Sequence[str], channels: ChannelSettings) -> list[tuple[str, str]]:
    outbox = "dev outbox (impactbus outbox, /outbox)"
    smtp, slack = channels.smtp, channels.slack
    out = []
    if "email" in services:
        out.append(("email", f"SMTP {smtp.host}:{smtp.port}" if smtp.configured else outbox))
    if "slack" in services:
        out.append(("slack", f"Slack API {slack.api_url}" if slack.configured else outbox))
    return out


def _banner(
    url: str,
    embedded: EmbeddedNats | None,
    services: Sequence[str],
    rt: Runtime,
    hub: HubSettings,
    *,
    token: str | None = None,
) -> str:
    where = f"embedded, store {embedded.store_dir}" if embedded else "external"
    lines = [
        "impactbus is up",
        f"  NATS      {url} ({where})",
        f"  services  {', '.join(services)}",
    ]
    if "api" in services:
        lines.append(f"  web/API   {hub.base_url}")
    lines += [
        f"  {channel:<9} {where_to}" for channel, where_to in _destinations(services, rt.channels)
    ]
    if token is not None:
        lines.append(f"  sign in   {token}")
        lines.append(
            f"            (admin token for {hub.base_url}/login: outbox, post form; "
            "new on each start, shown only here)"
        )
    if embedded:
        lines.append("  try       impactbus --help   (in another terminal)")
    lines.append("  Ctrl-C to stop")
    return "\n".join(lines)
