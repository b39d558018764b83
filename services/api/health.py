"""Probes and metrics: ``/healthz`` (live), ``/readyz`` (NATS and streams), ``/metrics``.

None needs a token: probes come from the orchestrator and ``/metrics`` from Prometheus,
on the internal network. They reveal counts, never events.
"""

from __future__ import annotations

import asyncio
from typing import Final

import nats.errors
import nats.js.errors
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from services.api.state import State
from services.bus import EVENTS

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
    detail = None
    if not state.bus.connected:
        detail = "NATS disconnected"
    else:
        try:
            await asyncio.wait_for(state.bus.js.stream_info(EVENTS), READY_TIMEOUT_S)
        except nats.js.errors.NotFoundError:
            detail = f"stream {EVENTS} missing"
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            detail = f"JetStream not answering: {type(exc).__name__}"
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
