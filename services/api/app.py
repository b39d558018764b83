"""The HTTP API app and the ``api`` service that serves it.

:func:`create_app` builds a FastAPI app around the process's :class:`~services.config.Runtime`
(plain FastAPI, our own NATS connection: faststream 0.7's FastAPI integration warns that
it moved, and the API needs no broker subscriptions). Its lifespan opens the directory
and starts the token mirror. :func:`run_api` serves it with uvicorn until ``rt.stop`` is
set, then stops taking connections and lets in-flight requests finish.

Routes live in sibling modules, one router each: ``events`` (ingest), ``directory``
(recipients and subscriptions), ``feeds`` (reading events back), ``health`` (probes,
``/metrics``), ``docs_ui`` (Swagger UI at ``/docs``, from local files: FastAPI's own
``/docs`` and ``/redoc`` load from a CDN and are off). Errors become problem documents in
``problems``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, Final

import uvicorn
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from schemas.directory import Recipient
from schemas.errors import ImpactbusError
from schemas.events import Event
from services.api import directory, docs_ui, events, feeds, health, problems
from services.api.metrics import ApiMetrics, MetricsMiddleware
from services.api.probes import HubCollector
from services.api.state import ApiSettings, ApiState
from services.config import Runtime
from services.web.state import WebSettings

log = logging.getLogger("impactbus.api")

TITLE: Final = "impactbus API"
VERSION: Final = "1.0.0"
DESCRIPTION: Final = """\
Emit Collective Impact initiative events and manage who receives them.

Authenticate with `Authorization: Bearer ib_<id>_<secret>` (create tokens with
`impactbus tokens create`). Errors are RFC 9457 problem documents
(`application/problem+json`); a flooding token gets `429` with `Retry-After`.
"""
TAGS: Final = [
    {"name": "events", "description": "Publish events (stored in JetStream before `202`)."},
    {"name": "directory", "description": "Recipients and their subscriptions."},
    {"name": "feeds", "description": "Read an initiative's events back."},
    {"name": "health", "description": "Probes and Prometheus metrics (no token)."},
]
GRACEFUL_S: Final = 10


def create_app(
    rt: Runtime, settings: ApiSettings | None = None, web: WebSettings | None = None
) -> FastAPI:
    """The API app of one process.

    Args:
        rt: the process's runtime (its bus is shared with the other services).
        settings: API knobs; default: from ``IMPACTBUS_API_*``.
        web: the web pages' settings; default: from ``IMPACTBUS_WEB_*``.
    """
    settings = settings or ApiSettings()
    web = web or WebSettings()
    metrics = ApiMetrics()
    # The other services of this process (router, workers) report through the same /metrics.
    metrics.hub = HubCollector(rt)
    metrics.registry.register(metrics.hub)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await ApiState.open(rt.bus, settings, metrics)
        app.state.api = state
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load Swagger UI / ReDoc from a CDN: docs_ui instead
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,  # no OAuth2 flows: bearer tokens only
    )
    # for the web pages: links and data dir, their own knobs, which channels use the outbox
    app.state.hub = rt.hub
    app.state.web_settings = web
    app.state.channels = rt.channels
    problems.install(app)  # first: the metrics middleware wraps it and counts its 500s
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for module in (events, directory, feeds, health, docs_ui):
        app.include_router(module.router)
    _include_optional(app, "services.web")  # <<< HTML pages (preference centre, unsubscribe)
    app.openapi = _openapi_builder(app)  # type: ignore[method-assign]
    return app


def _include_optional(app: FastAPI, module_name: str) -> None:
    """Include ``module_name``'s ``router`` if that module exists yet."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name != module_name:
            raise  # the module exists but is broken: say so
        return
    router = getattr(module, "router", None)
    if router is None:
        log.warning("%s has no router yet: its pages are not served", module_name)
        return
    app.include_router(router)


def _openapi_builder(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with the schemas of the bodies the handlers read themselves."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        _, defs = models_json_schema(
            [
                (Event, "validation"),
                (events.ShortEvent, "validation"),
                (Recipient, "validation"),
                (directory.SubscriptionIn, "validation"),
            ],
            ref_template="#/components/schemas/{model}",
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "ib_<id>_<secret>"}
        }
        for path, ops in schema["paths"].items():
            if not path.startswith(("/healthz", "/readyz", "/metrics")):
                for op in ops.values():
                    op["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    return build


# ------------------------------------------------------------------------------ service


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the hub owns SIGINT/SIGTERM (``rt.stop``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is a clear error, not an exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
    # then, and without it Nagle + delayed ACKs add ~40 ms to every response
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ImpactbusError(f"the API cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


async def run_api(
    rt: Runtime, *, settings: ApiSettings | None = None, web: WebSettings | None = None
) -> None:
    """Serve the API on ``rt.hub.http_host:http_port`` until ``rt.stop`` is set.

    Raises:
        ImpactbusError: the port is taken, or the app did not start.
    """
    app = create_app(rt, settings, web)
    sock = _bind(rt.hub.http_host, rt.hub.http_port)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_S,
        backlog=2048,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    stopping = asyncio.create_task(rt.stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        await serving
        sock.close()
    if not server.started:
        raise ImpactbusError("the API did not start (see the log)")
