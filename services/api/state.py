"""What the API's handlers share, and the dependencies that hand it to them.

:class:`ApiState` is built once per app in its lifespan and kept on ``app.state.api``;
handlers get it (and the caller's :class:`~services.directory.auth.Principal`) through FastAPI
dependencies, never from module globals.

Errors (both :class:`~schemas.errors.InvalidInputError`)::

    MalformedRequestError       the body is not JSON, or a header is unreadable (HTTP 400)
    BodyTooLargeError           the body is over the route's limit              (HTTP 413)
    UnsupportedMediaTypeError   the body is declared as something else than JSON (HTTP 415)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, Request
from pydantic import Field
from pydantic_core import from_json
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import InvalidInputError
from services.api.metrics import ApiMetrics
from services.bus import KV_IDEMPOTENCY, Bus
from services.bus.kv import Kv, open_kv
from services.directory.auth import Authenticator, Principal
from services.directory.ratelimit import RateLimiter
from services.directory.records import Directory

KiB: Final = 1024
MiB: Final = 1024 * KiB

JSON: Final = frozenset({"application/json"})
"""The media types of a JSON body (the directory's routes)."""


class ApiSettings(BaseSettings):
    """Knobs of the HTTP API only (``IMPACTBUS_API_*``); host and port: ``HubSettings``."""

    model_config = SettingsConfigDict(env_prefix="IMPACTBUS_API_", env_file=".env", extra="ignore")

    max_body: int = Field(256 * KiB, ge=1 * KiB, description="bytes, one event or directory call")
    max_batch_body: int = Field(8 * MiB, ge=1 * KiB, description="bytes, POST /v1/events:batch")
    max_batch: int = Field(1000, ge=1, le=10_000, description="events per batch")
    rate_per_s: float = Field(200, description="requests per second per token; <= 0: no limit")
    rate_burst: float = Field(400, ge=1, description="requests a token may make at once")


class MalformedRequestError(InvalidInputError):
    """The request cannot be read: malformed JSON or an unreadable header."""


class BodyTooLargeError(InvalidInputError):
    """The request body is larger than the route accepts."""


class UnsupportedMediaTypeError(InvalidInputError):
    """The request's ``Content-Type`` is not one the route reads."""


@dataclass
class ApiState:
    """One API app's connections and helpers."""

    bus: Bus
    settings: ApiSettings
    auth: Authenticator
    limiter: RateLimiter
    directory: Directory
    metrics: ApiMetrics
    idempotency: Kv  # body hashes per Idempotency-Key (services.api.idempotency)

    @classmethod
    async def open(cls, bus: Bus, settings: ApiSettings, metrics: ApiMetrics) -> ApiState:
        """Open the directory and start following the ``tokens`` bucket."""
        auth = await Authenticator.open(bus)
        await auth.start()
        return cls(
            bus=bus,
            settings=settings,
            auth=auth,
            limiter=RateLimiter(settings.rate_per_s, settings.rate_burst),
            directory=await Directory.open(bus),
            metrics=metrics,
            idempotency=await open_kv(bus, KV_IDEMPOTENCY),
        )

    async def close(self) -> None:
        """Stop following the ``tokens`` bucket."""
        await self.auth.stop()


def api_state(request: Request) -> ApiState:
    """The :class:`ApiState` of the app serving ``request`` (also for the web pages)."""
    state: ApiState = request.app.state.api
    return state


# The dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
# dependency in a worker thread, a thread hop per request that costs milliseconds.


async def state_dependency(request: Request) -> ApiState:
    """:func:`api_state` as a FastAPI dependency."""
    return api_state(request)


async def authorized(request: Request) -> Principal:
    """The caller, authenticated and within its rate limit.

    Raises:
        AuthenticationError: no valid token (401).
        RateLimitedError: the token is over its rate (429).
    """
    state = api_state(request)
    principal = await state.auth.verify(request.headers.get("authorization"))
    state.limiter.check(principal.token_id)
    return principal


State = Annotated[ApiState, Depends(state_dependency)]
Caller = Annotated[Principal, Depends(authorized)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read no further than ``limit`` bytes.

    ``Content-Length`` only lets a request be refused early: the limit is enforced on the
    bytes actually received, so a lying or absent header (chunked encoding) changes nothing.

    Raises:
        BodyTooLargeError: more than ``limit`` bytes.
        MalformedRequestError: an unreadable ``Content-Length``.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedRequestError("Content-Length is not a number")
        if int(declared) > limit:
            raise BodyTooLargeError(f"body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_media_type(request: Request, accepted: frozenset[str]) -> None:
    """Refuse a body declared as anything but one of ``accepted`` (parameters ignored).

    A form post or a text body sent to a JSON route is a client mistake that should be
    named as such (415), not parsed as JSON and reported as malformed.

    Raises:
        UnsupportedMediaTypeError: no ``Content-Type``, or another one.
    """
    declared = request.headers.get("content-type", "")
    if declared.partition(";")[0].strip().lower() not in accepted:
        names = " or ".join(sorted(accepted))
        got = f"got {declared!r}" if declared else "got none"
        raise UnsupportedMediaTypeError(f"Content-Type: send {names} ({got})")


async def read_json(request: Request, limit: int, accepted: frozenset[str] = JSON) -> object:
    """The request body parsed as JSON (see :func:`read_body` for the limit).

    Args:
        request: the request.
        limit: the most bytes the body may have.
        accepted: the media types the route reads (default: ``application/json``).

    Raises:
        UnsupportedMediaTypeError: the body is declared as another media type.
        BodyTooLargeError: more than ``limit`` bytes.
        MalformedRequestError: empty, not UTF-8 or not JSON.
    """
    check_media_type(request, accepted)
    body = await read_body(request, limit)
    if not body.strip():
        raise MalformedRequestError("empty body: send a JSON document")
    try:
        return from_json(body)
    except ValueError as exc:
        raise MalformedRequestError(f"malformed JSON: {exc}") from None
