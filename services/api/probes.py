"""Health and Prometheus metrics of the hub's services (router, workers, digest).

``impactbus run router`` (or any service but ``api``) serves ``/healthz`` (live),
``/readyz`` (NATS connected, streams present) and ``/metrics`` on
``IMPACTBUS_HEALTH_PORT`` (default 9090; 0 turns it off). With the API in the same
process, the API's ``/metrics`` includes these metrics too.

The metrics are read from the services' own counters when Prometheus scrapes, so the hot
path pays nothing: events routed, jobs queued and dead letters (router); deliveries by
channel and outcome (workers); messages whose handling failed, retried or dead-lettered,
per consumer; consumer pending and ack-pending counts (JetStream). Labels
are channels and consumer names, never concrete subjects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.bus import EVENTS
from services.bus.streams import consumer_counts, readiness
from services.config import Runtime

log = logging.getLogger("impactbus.health")


class HealthSettings(BaseSettings):
    """``IMPACTBUS_HEALTH_*``."""

    model_config = SettingsConfigDict(
        env_prefix="IMPACTBUS_HEALTH_", env_file=".env", extra="ignore"
    )

    port: int = Field(9090, ge=0, le=65535, description="0: no health endpoint")
    host: str = "127.0.0.1"


class HubCollector(Collector):
    """Prometheus view of one process's services, computed at scrape time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.consumer_info: dict[tuple[str, str], tuple[int, int]] = {}

    def collect(self) -> Iterator[Any]:
        """Yield the metric families."""
        counters = self.rt.counters
        deliveries = CounterMetricFamily(
            "impactbus_deliveries",
            "Deliveries by channel and outcome",
            labels=["channel", "outcome"],
        )
        for channel in ("email", "slack", "webhook"):
            for outcome, n in counters.get(channel, {}).items():
                if outcome != "in_flight":
                    deliveries.add_metric([channel, outcome], n)
        yield deliveries
        router = counters.get("router", {})
        for name, doc in (
            ("routed", "Events routed"),
            ("jobs", "Delivery jobs queued"),
            ("dead", "Events dead-lettered as invalid"),
        ):
            fam = CounterMetricFamily(f"impactbus_router_{name}", doc)
            fam.add_metric([], router.get(name, 0))
            yield fam
        failures = CounterMetricFamily(
            "impactbus_consumer_failures",
            "Messages whose handling failed, by consumer and outcome (retrying, dead)",
            labels=["consumer", "outcome"],
        )
        for name, stats in self.rt.stats.items():
            for outcome, n in stats.failures.items():
                failures.add_metric([name, outcome], n)
        yield failures
        pending = GaugeMetricFamily(
            "impactbus_consumer_pending",
            "Messages not yet delivered to the consumer",
            labels=["stream", "consumer"],
        )
        unacked = GaugeMetricFamily(
            "impactbus_consumer_ack_pending",
            "Messages delivered but not yet acknowledged",
            labels=["stream", "consumer"],
        )
        for (stream, consumer), (p, a) in self.consumer_info.items():
            pending.add_metric([stream, consumer], p)
            unacked.add_metric([stream, consumer], a)
        yield pending
        yield unacked

    async def refresh(self) -> None:
        """Read consumer pending counts (before a scrape)."""
        for stream, consumer in _consumers(self.rt):
            counts = await consumer_counts(self.rt.bus, stream, consumer, 2)
            if counts is not None:
                self.consumer_info[(stream, consumer)] = counts


def _consumers(rt: Runtime) -> list[tuple[str, str]]:
    names = {
        "router": ("EVENTS", "router"),
        "email": ("DELIVERIES", "email"),
        "slack": ("DELIVERIES", "slack"),
        "webhook": ("DELIVERIES", "webhook"),
        "digest": ("SCHEDULES", "digest"),
    }
    return [names[s] for s in rt.stats if s in names]


async def ready(rt: Runtime) -> str | None:
    """``None`` when NATS is connected and the streams exist, else why not."""
    return await readiness(rt.bus, EVENTS, 2)


async def run_health(rt: Runtime, settings: HealthSettings | None = None) -> None:
    """Serve the health endpoints until ``rt.stop`` is set (no-op with port 0)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    settings = settings or HealthSettings()
    if settings.port == 0:
        await rt.stop.wait()
        return
    try:
        sock = socket.create_server((settings.host, settings.port), reuse_port=False)
    except OSError as exc:
        # A second copy of a service on the same machine: serve on without the endpoint.
        log.warning(
            "health endpoint off: cannot listen on %s:%d (%s)",
            settings.host,
            settings.port,
            exc.strerror or exc,
        )
        await rt.stop.wait()
        return
    collector = HubCollector(rt)
    registry = CollectorRegistry()
    registry.register(collector)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        why = await ready(rt)
        if why:
            return JSONResponse({"status": "not ready", "detail": why}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(_: Request) -> Response:
        await collector.refresh()
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    )
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", lifespan="off"
    )
    server = _quiet_server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await rt.stop.wait()
    server.should_exit = True
    with contextlib.suppress(Exception):
        await task
    sock.close()


def _quiet_server(config: Any) -> Any:
    """A uvicorn server without its signal handlers (the hub owns SIGINT/SIGTERM)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)
