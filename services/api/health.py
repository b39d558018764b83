"""Probes and metrics: ``/healthz`` (live), ``/readyz`` (NATS and streams), ``/metrics``.

None needs a token: probes come from the orchestrator and ``/metrics`` from Prometheus,
on the internal network. They reveal counts, never events.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from services.api.state import State
from services.bus import EVENTS
from services.bus.streams import readiness

router = APIRouter(tags=["health"])

READY_TIMEOUT_S: Final = 2.0
_JSON: Final = "application/json"


@router.get(
    "/healthz",
    summary="Liveness",
    responses={200: {"content": {_JSON: {"example": {"status": "ok"}}}}},
)
async def healthz() -> Response:
    """The process serves requests."""
    return Response(b'{"status":"ok"}', media_type=_JSON)


@router.get(
    "/readyz",
    summary="Readiness",
    responses={
        200: {"content": {_JSON: {"example": {"status": "ready"}}}},
        503: {
            "description": "not ready",
            "content": {_JSON: {"example": {"status": "not ready", "detail": "NATS disconnected"}}},
        },
    },
)
async def readyz(state: State) -> Response:
    """Ready when NATS is connected and the EVENTS stream exists."""
    detail = await readiness(state.bus, EVENTS, READY_TIMEOUT_S)
    if detail:
        body = f'{{"status":"not ready","detail":"{detail}"}}'
        return Response(body, 503, media_type=_JSON)
    return Response(b'{"status":"ready"}', media_type=_JSON)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    responses={
        200: {
            "content": {
                CONTENT_TYPE_LATEST: {
                    "example": 'impactbus_api_events_ingested_total{initiative="somerville",'
                    'kind="metric"} 42.0\n'
                }
            }
        }
    },
)
async def metrics(state: State) -> Response:
    """Counters in the Prometheus text format."""
    if state.metrics.hub is not None:
        await state.metrics.hub.refresh()
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
