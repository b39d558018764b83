"""Prometheus metrics of one API app, and the ASGI middleware that counts requests.

Requests are labelled by route *template* (``/v1/recipients/{recipient_id}``), never by
the concrete path, and a path no route matched is counted as ``unmatched``: a scanner
cannot blow up the label cardinality. Events are labelled by kind and initiative (both
validated tokens of an accepted event), not by their concrete subject.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.events import Event

if TYPE_CHECKING:
    from services.api.probes import HubCollector


class ApiMetrics:
    """The collectors of one app, in a registry of their own (several apps, no clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.hub: HubCollector | None = None
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.events = Counter(
            "impactbus_api_events_ingested",
            "Events accepted and stored in JetStream",
            ["kind", "initiative"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "impactbus_api_events_duplicate",
            "Events JetStream had already stored",
            ["kind", "initiative"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "impactbus_api_events_rejected",
            "Events refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.requests = Counter(
            "impactbus_api_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "impactbus_api_request_duration_seconds",
            "HTTP request duration",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        # bounded: kinds x initiatives, and methods x route templates x statuses
        self._events: dict[tuple[str, str, bool], Counter] = {}
        self._requests: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def ingested(self, event: Event, *, duplicate: bool) -> None:
        """Count one accepted event."""
        self.ingested_many(event.kind, event.initiative, 1, duplicate=duplicate)

    def ingested_many(self, kind: str, initiative: str, n: int, *, duplicate: bool) -> None:
        """Count ``n`` accepted events of one kind and initiative."""
        key = (kind, initiative, duplicate)
        child = self._events.get(key)
        if child is None:
            counter = self.duplicates if duplicate else self.events
            child = self._events[key] = counter.labels(kind, initiative)
        child.inc(n)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request (the label children are cached: ``labels()`` costs a lock)."""
        key = (method, route, status)
        children = self._requests.get(key)
        if children is None:
            children = self._requests[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body copy) that counts requests."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request(scope["method"], template, status, time.perf_counter() - start)
