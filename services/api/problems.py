"""Errors at the HTTP boundary: every failure becomes an RFC 9457 problem document.

The hub's exceptions map to statuses in one table (:data:`STATUS`); anything else is a
500 whose body says only "internal error" (the traceback goes to the log, never to the
client). Handlers raise the hub's own exceptions and never build error responses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.errors import (
    BusUnavailableError,
    ConflictError,
    ImpactbusError,
    InvalidInputError,
    NotFoundError,
)
from services.api.idempotency import IdempotencyKeyReusedError
from services.api.state import (
    BodyTooLargeError,
    MalformedRequestError,
    UnsupportedMediaTypeError,
)
from services.bus.errors import NatsError
from services.directory.auth import AuthenticationError, PermissionDeniedError
from services.directory.ratelimit import RateLimitedError
from services.directory.records import UnreadableRecordError

log = logging.getLogger("impactbus.api")

PROBLEM_JSON: Final = "application/problem+json"

# most specific first: the first class an error is an instance of decides
STATUS: Final[dict[type[ImpactbusError], int]] = {
    MalformedRequestError: 400,
    BodyTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    InvalidInputError: 422,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    IdempotencyKeyReusedError: 409,
    UnreadableRecordError: 409,
    RateLimitedError: 429,
    BusUnavailableError: 503,
    ConflictError: 409,
}
"""HTTP status per error type, looked up along the raised type's MRO (most specific first)."""


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str = "about:blank"
    title: str = Field(description="the status phrase, e.g. 'Unprocessable Content'")
    status: int
    detail: str = Field(description="what was wrong, with the field path for schema errors")


def problem(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    """A problem response."""
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail)
    return Response(body.model_dump_json(), status, headers, media_type=PROBLEM_JSON)


def status_of(exc: ImpactbusError) -> int:
    """The HTTP status of one of the hub's errors."""
    return next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 500)


def _headers(exc: ImpactbusError) -> dict[str, str]:
    if isinstance(exc, AuthenticationError):
        return {"WWW-Authenticate": 'Bearer realm="impactbus", error="invalid_token"'}
    if isinstance(exc, RateLimitedError):
        return {"Retry-After": exc.retry_after_header}
    if isinstance(exc, BusUnavailableError):
        return {"Retry-After": "1"}
    return {}


async def _on_hub_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ImpactbusError)
    status = status_of(exc)
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        detail = str(exc) if status == 503 else "internal error"
        return problem(status, detail, _headers(exc))
    return problem(status, str(exc), _headers(exc))


async def _on_nats(request: Request, exc: Exception) -> Response:
    # a NATS error a code path did not translate (KV read, consumer create...): the bus is
    # the problem, not the request, so 503 like BusUnavailableError
    log.warning("%s %s: NATS: %s", request.method, request.url.path, type(exc).__name__)
    return problem(503, "NATS is not answering; retry shortly", {"Retry-After": "1"})


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return problem(422, "; ".join(parts))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem(exc.status_code, detail, exc.headers)


class CatchAllMiddleware:
    """Last resort: an unexpected exception is logged once and answered with a bare 500.

    Pure ASGI, inside the metrics middleware (so the 500 is counted) and outside the
    routes; the worker keeps serving.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            if not started:
                await problem(500, "internal error")(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into a problem document."""
    app.add_exception_handler(ImpactbusError, _on_hub_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(NatsError, _on_nats)
    app.add_exception_handler(TimeoutError, _on_nats)
    app.add_middleware(CatchAllMiddleware)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem statuses a route can return."""
    examples = {
        400: "malformed JSON: EOF while parsing an object at line 1 column 12",
        401: "missing bearer token (Authorization: Bearer ib_...)",
        403: "token 0f3a9c2b7d4e8a61 (system) may not publish milestone events to 'somerville'",
        404: "no recipient 'maria'",
        409: "Idempotency-Key 'crm-sync-2026-10-01-bmi' was already used for other content: "
        "send a new key for a new request, or the same body to retry",
        413: "body is over the limit of 262144 bytes",
        415: "Content-Type: send application/json (got 'application/x-www-form-urlencoded')",
        422: "data.title: String should have at most 200 characters",
        429: "rate limit of 200 requests/s (burst 400) exceeded",
        503: "JetStream did not acknowledge 1 event(s): timeout",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        phrase = HTTPStatus(status).phrase
        out[status] = {
            "description": phrase,
            "model": Problem,
            "content": {
                PROBLEM_JSON: {
                    "example": {
                        "type": "about:blank",
                        "title": phrase,
                        "status": status,
                        "detail": examples.get(status, phrase),
                    }
                }
            },
        }
    return out
