"""Feeds: ``GET /v1/initiatives/{initiative}/events``, read straight from the EVENTS stream.

Each request reads through a short-lived, in-memory, ack-less consumer filtered on
``impact.<initiative>.<kind or *>.>``:

* with ``since`` (an RFC 3339 time or a stream sequence) it returns the first ``limit``
  events from there on, oldest first; ``next_since`` continues the page (poll with it);
* without, it returns the last ``limit`` events (newest last). The start sequence is
  found by probing consumer ``num_pending`` counts over growing windows from the end of
  the stream, then bisecting, so a year of history is never scanned.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import APIRouter, Path, Query
from pydantic import ValidationError
from starlette.responses import Response

from schemas.events import EVENT_ADAPTER
from schemas.subjects import EVENTS_ROOT, EventKind, validate_pattern
from schemas.text import Token
from services.api.problems import responses
from services.api.state import Caller, MalformedRequestError, State
from services.bus import EVENTS, Bus
from services.bus.streams import read_window

router = APIRouter(tags=["feeds"])

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
MAX_SEQUENCE: Final = 2**64 - 1
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
# nats-server compares start times in Unix nanoseconds (int64): a later time wraps around
# and would read the feed from the start
LATEST: Final = datetime(2262, 4, 11, 23, 47, 16, tzinfo=UTC)
SINCE_FORMS: Final = (
    f"since: use a stream sequence from 1 to {MAX_SEQUENCE} (a previous next_since) or an "
    "RFC 3339 time with an offset from 1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z, "
    "e.g. 2026-10-01T00:00:00Z"
)
_SEQUENCE: Final = re.compile(r"[0-9]{1,64}")
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


@dataclass(frozen=True, slots=True)
class FeedPage:
    """Events of one feed request, oldest first, as stored (validated) JSON."""

    events: list[bytes]
    next_since: int


def parse_since(value: str | None) -> int | datetime | None:
    """``since``: a stream sequence (digits) or an RFC 3339 time with an offset.

    Both are bounded to what JetStream can start a consumer at: a sequence fits in 64 bits
    and a time lies between the epoch and 2262-04-11 in UTC (where nats-server's Unix
    nanoseconds end; a far offset on year 1 is not even a time Python can represent).

    Raises:
        MalformedRequestError: neither, or out of those bounds (400).
    """
    if value is None:
        return None
    if _SEQUENCE.fullmatch(value):
        sequence = int(value)
        if sequence <= MAX_SEQUENCE:
            return max(1, sequence)
        raise MalformedRequestError(SINCE_FORMS)
    when = None
    if _RFC3339.fullmatch(value):
        with contextlib.suppress(ValueError, OverflowError):
            when = datetime.fromisoformat(value.upper().replace("Z", "+00:00")).astimezone(UTC)
    if when is None or not EARLIEST <= when <= LATEST:
        raise MalformedRequestError(SINCE_FORMS)
    return when


def feed_filter(initiative: str, kind: EventKind | None) -> str:
    """The filter subject of one initiative's events (of one kind)."""
    return validate_pattern(f"{EVENTS_ROOT}.{initiative}.{kind or '*'}.>")


async def read_feed(bus: Bus, subject: str, since: int | datetime | None, limit: int) -> FeedPage:
    """Read up to ``limit`` events matching ``subject`` from the EVENTS stream.

    Raises:
        BusUnavailableError: JetStream did not answer.
    """
    window = await read_window(bus, EVENTS, subject, since, limit)
    events = []
    for _, data in window.msgs:
        try:
            EVENT_ADAPTER.validate_json(data)
        except ValidationError:
            continue  # published around the API straight to NATS: the router dead-letters it
        events.append(data)
    after = (
        window.msgs[-1][0] + 1
        if window.msgs
        else (window.last_seq + 1 if since is None or isinstance(since, datetime) else since)
    )
    return FeedPage(events, after)


_FEED_EXAMPLE: Final = {
    "initiative": "somerville",
    "kind": "metric",
    "next_since": 43,
    "events": [
        {
            "specversion": "1.0",
            "id": "01JC3Z8Q6W3V5J1T0N9X7B2M4K",
            "source": "urn:impactbus:token:0f3a9c2b7d4e8a61",
            "type": "org.impactbus.metric",
            "time": "2026-10-01T09:30:00Z",
            "subject": "bmi",
            "initiative": "somerville",
            "datacontenttype": "application/json",
            "data": {
                "kind": "metric",
                "indicator": "Children at a healthy weight",
                "value": 71.5,
                "unit": "%",
                "period": "2026-09",
                "baseline": 64.0,
                "target": 75.0,
                "direction": "increase",
                "note": None,
            },
        }
    ],
}


@router.get(
    "/v1/initiatives/{initiative}/events",
    summary="Read an initiative's events",
    responses={
        200: {
            "description": "events, oldest first (newest last)",
            "content": {"application/json": {"example": _FEED_EXAMPLE}},
        },
        **responses(400, 401, 403, 422, 429, 503),
    },
)
async def initiative_events(  # noqa: PLR0917 - FastAPI injects parameters by name
    initiative: Annotated[Token, Path(examples=["somerville"])],
    state: State,
    caller: Caller,
    kind: Annotated[EventKind | None, Query(description="only this kind")] = None,
    since: Annotated[
        str | None,
        Query(
            description="RFC 3339 time or stream sequence (a previous next_since)",
            examples=["2026-10-01T00:00:00Z", "43"],
            max_length=64,
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Response:
    """Events of one initiative: the last ``limit``, or ``limit`` from ``since`` on."""
    if not caller.may_read(initiative):
        raise caller.deny(f"read events of {initiative!r}")
    page = await read_feed(state.bus, feed_filter(initiative, kind), parse_since(since), limit)
    head = json.dumps({"initiative": initiative, "kind": kind, "next_since": page.next_since})
    head = head[:-1] + ',"events":['
    return Response(head.encode() + b",".join(page.events) + b"]}", media_type="application/json")
