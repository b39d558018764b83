"""Ingest: ``POST /v1/events`` (one event) and ``POST /v1/events:batch`` (up to 1000).

An event comes in one of two forms:

* CloudEvents 1.0 structured JSON (it has ``specversion``), taken as is; its
  (``source``, ``id``) pair makes a retry the same event.
* The short form ``{"kind", "initiative", "topic", "data"}`` (and optionally ``time``),
  completed with a new ULID id, the current time and ``source`` =
  ``urn:impactbus:token:<token id>``. An ``Idempotency-Key`` header becomes the event id
  (item *i* of a batch gets ``<key>-<i>``), so a retried POST is the same event.

Within the duplicate window a key is bound to the body first sent with it, in every API
process (:mod:`services.api.idempotency`): the same key with another body is ``409``.

A response is sent only after JetStream acknowledged the event: ``202`` means stored.
JetStream deduplicates on ``Nats-Msg-Id`` = hash(source, id) within the stream's
duplicate window; ``duplicate: true`` says a retry found the event already stored.

A batch answers ``202`` when every event was stored, else ``207 Multi-Status``; either way
``results[i]`` tells what became of event *i* (``202`` stored, ``422`` invalid, ``403``
not allowed for this token). Invalid or forbidden events are never published; the valid
ones go out pipelined in one :func:`~services.pipeline.ingest.publish_events` call.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import APIRouter, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, TypeAdapter, ValidationError
from starlette.responses import Response
from ulid import ULID

from schemas.bounds import NEW_INPUT
from schemas.errors import InvalidInputError
from schemas.events import EVENT_ADAPTER, TYPE_PREFIX, Event, describe, new_event
from schemas.subjects import EventKind
from schemas.text import Token
from services.api import docs
from services.api.idempotency import IdempotencyKeyReusedError, Route, claim
from services.api.problems import responses
from services.api.state import ApiState, api_state, authorized, read_json
from services.directory.auth import PermissionDeniedError, Principal
from services.pipeline.ingest import publish_event, publish_events

router = APIRouter(tags=["events"])

_ID_CHARS: Final = frozenset(chr(c) for c in range(0x21, 0x7F))
ONE_TYPES: Final = frozenset({"application/json", "application/cloudevents+json"})
BATCH_TYPES: Final = frozenset({"application/json", "application/cloudevents-batch+json"})


class ShortEvent(BaseModel):
    """The short form: the hub fills in ``id``, ``time`` and ``source``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EventKind
    initiative: Token
    topic: Token
    time: AwareDatetime | None = None
    data: dict[str, Any]


SHORT_ADAPTER: Final = TypeAdapter(ShortEvent)
_SHORT_KEYS: Final = frozenset(ShortEvent.model_fields)


class Accepted(BaseModel):
    """An event stored in the EVENTS stream."""

    id: str
    subject: str
    sequence: int
    duplicate: bool = False


class BatchItem(BaseModel):
    """What became of one event of a batch."""

    index: int
    status: int
    id: str | None = None
    subject: str | None = None
    sequence: int | None = None
    duplicate: bool | None = None
    error: str | None = None


class BatchResult(BaseModel):
    """Per-event results of ``POST /v1/events:batch``, in request order."""

    accepted: int
    rejected: int
    results: list[BatchItem]


def to_event(obj: object, principal: Principal, event_id: str | None = None) -> Event:
    """Validate one submitted event (either form) into an :class:`Event`.

    Args:
        obj: the parsed JSON of the event.
        principal: the caller; its id becomes a short-form event's ``source``.
        event_id: a short-form event's id (from ``Idempotency-Key``), else a new ULID.

    Raises:
        InvalidInputError: it breaks the schema (the message names each field).
    """
    if not isinstance(obj, dict):
        raise InvalidInputError("body: expected a JSON object (one event)")
    try:
        if "specversion" in obj:
            return EVENT_ADAPTER.validate_python(obj, context=NEW_INPUT)
        envelope = _envelope(obj, principal, event_id)
        if envelope is not None:
            # hot path: one validation of the completed envelope; if it fails, the slow path
            # below validates again to name the short form's own fields in the message
            with contextlib.suppress(ValidationError):
                return EVENT_ADAPTER.validate_python(envelope, context=NEW_INPUT)
        short = SHORT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise InvalidInputError(describe(exc)) from None
    return new_event(
        short.kind,
        short.initiative,
        short.topic,
        short.data,
        source=principal.source,
        event_id=event_id,
        time=short.time,
    )


def _envelope(
    obj: dict[str, Any], principal: Principal, event_id: str | None
) -> dict[str, Any] | None:
    """The CloudEvents envelope of a plausible short-form event (what ``new_event`` builds)."""
    kind, data = obj.get("kind"), obj.get("data")
    if not _SHORT_KEYS.issuperset(obj) or not isinstance(kind, str) or not isinstance(data, dict):
        return None
    when = obj.get("time")
    return {
        "id": event_id or str(ULID()),
        "source": principal.source,
        "type": f"{TYPE_PREFIX}{kind}",
        "time": datetime.now(UTC) if when is None else when,
        "subject": obj.get("topic"),
        "initiative": obj.get("initiative"),
        "data": {**data, "kind": kind},
    }


def check_idempotency_key(key: str | None) -> str | None:
    """``key`` if it can be an event id (1 to 100 printable ASCII characters, no space).

    Raises:
        InvalidInputError: it cannot.
    """
    if key is not None and (not 0 < len(key) <= 100 or not _ID_CHARS.issuperset(key)):
        raise InvalidInputError(
            "Idempotency-Key: use 1 to 100 printable ASCII characters without spaces"
        )
    return key


def _forbidden(principal: Principal, event: Event) -> str | None:
    if principal.may_publish(event.kind, event.initiative):
        return None
    return str(principal.deny(f"publish {event.kind} events to {event.initiative!r}"))


async def _claim(state: ApiState, route: Route, caller: Principal, key: str, body: object) -> None:
    """Claim ``key`` for ``body`` (see :mod:`services.api.idempotency`), counting a refusal."""
    try:
        await claim(state.idempotency, route, caller.source, key, body)
    except IdempotencyKeyReusedError:
        state.metrics.rejected.labels("key_reused").inc()
        raise


@router.post(
    "/v1/events",
    status_code=202,
    summary="Publish one event",
    response_model=Accepted,
    responses={
        **docs.ACCEPTED,
        **responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    },
    openapi_extra=docs.body_doc(docs.ONE, ONE_TYPES),
)
async def post_event(request: Request) -> Response:
    """Validate, authorise and publish one event; answer once JetStream stored it."""
    state, caller = api_state(request), await authorized(request)
    obj = await read_json(request, state.settings.max_body, ONE_TYPES)
    key = check_idempotency_key(request.headers.get("idempotency-key"))
    try:
        event = to_event(obj, caller, key)
    except InvalidInputError:
        state.metrics.rejected.labels("invalid").inc()
        raise
    denied = _forbidden(caller, event)
    if denied:
        state.metrics.rejected.labels("forbidden").inc()
        raise PermissionDeniedError(denied)
    if key is not None:
        await _claim(state, "event", caller, key, obj)
    published = await publish_event(state.bus, event)
    state.metrics.ingested(event, duplicate=published.duplicate)
    body = json.dumps(
        {
            "id": published.id,
            "subject": published.subject,
            "sequence": published.sequence,
            "duplicate": published.duplicate,
        }
    )
    return Response(body, 202, media_type="application/json")


@router.post(
    "/v1/events:batch",
    status_code=202,
    summary="Publish up to 1000 events",
    response_model=BatchResult,
    responses={
        **docs.BATCH_RESULTS,
        207: {**docs.BATCH_RESULTS[207], "model": BatchResult},
        **responses(400, 401, 409, 413, 415, 422, 429, 503),
    },
    openapi_extra=docs.body_doc(docs.BATCH, BATCH_TYPES),
)
async def post_batch(request: Request) -> Response:
    """Validate each event; publish the valid ones pipelined; report per event."""
    state, caller = api_state(request), await authorized(request)
    settings = state.settings
    items = await read_json(request, settings.max_batch_body, BATCH_TYPES)
    if not isinstance(items, list):
        raise InvalidInputError("body: expected a JSON array of events")
    if not 0 < len(items) <= settings.max_batch:
        raise InvalidInputError(f"body: send 1 to {settings.max_batch} events per batch")
    key = check_idempotency_key(request.headers.get("idempotency-key"))
    results: list[dict[str, object]] = [{} for _ in items]
    valid: list[tuple[int, Event]] = []
    for i, item in enumerate(items):
        try:
            event = to_event(item, caller, f"{key}-{i}" if key else None)
        except InvalidInputError as exc:
            results[i] = {"index": i, "status": 422, "error": str(exc)}
            state.metrics.rejected.labels("invalid").inc()
            continue
        denied = _forbidden(caller, event)
        if denied:
            results[i] = {"index": i, "status": 403, "error": denied}
            state.metrics.rejected.labels("forbidden").inc()
            continue
        valid.append((i, event))
    if valid and key is not None:
        await _claim(state, "batch", caller, key, items)
    if valid:
        published = await publish_events(state.bus, [e for _, e in valid])
        counts: Counter[tuple[str, str, bool]] = Counter()
        for (i, event), p in zip(valid, published, strict=True):
            results[i] = {
                "index": i,
                "status": 202,
                "id": p.id,
                "subject": p.subject,
                "sequence": p.sequence,
                "duplicate": p.duplicate,
            }
            counts[event.kind, event.initiative, p.duplicate] += 1
        for (kind, initiative, duplicate), n in counts.items():
            state.metrics.ingested_many(kind, initiative, n, duplicate=duplicate)
    body = json.dumps(
        {"accepted": len(valid), "rejected": len(items) - len(valid), "results": results}
    )
    return Response(body, 202 if len(valid) == len(items) else 207, media_type="application/json")
