"""Events: one CloudEvents 1.0 envelope around a discriminated union of four kinds.

The kinds are ``metric`` (:class:`MetricUpdate`), ``milestone`` (:class:`Milestone`),
``meeting`` (:class:`MeetingNotes`) and ``update`` (:class:`Update`); ``data.kind`` is
the discriminator and the envelope's ``type`` is ``org.impactbus.<kind>``. The pair
(``source``, ``id``) is the idempotency key and becomes the ``Nats-Msg-Id``.

Validate at the edge with :data:`EVENT_ADAPTER` (or :func:`parse_event`); inside the hub,
events are passed as models. New input is validated with ``context=NEW_INPUT``
(:mod:`schemas.bounds`: numbers within ±10^12, times between 1900 and 2200); stored events
are read without it, under the looser rules they were accepted with.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from ulid import ULID

from schemas.bounds import NEW_INPUT, Day, Moment, Number
from schemas.errors import FieldProblem, InvalidFieldsError, InvalidInputError
from schemas.subjects import EventKind, EventSubject, event_subject
from schemas.text import Line, ShortLine, Text, Token

TYPE_PREFIX: Final = "org.impactbus."
DEFAULT_SOURCE: Final = "urn:impactbus:cli"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class MetricUpdate(_Frozen):
    """A new value of a shared-measurement indicator."""

    kind: Literal["metric"] = "metric"
    indicator: Line
    value: Number
    unit: ShortLine | None = None
    period: ShortLine | None = Field(None, description="e.g. '2026-10' or '2026-W42'")
    baseline: Number | None = None
    target: Number | None = None
    direction: Literal["increase", "decrease"] = Field(
        "increase", description="which direction of change is good"
    )
    note: Text | None = None


class Milestone(_Frozen):
    """A milestone planned, reached, missed or at risk."""

    kind: Literal["milestone"] = "milestone"
    title: Line
    status: Literal["planned", "reached", "missed", "at-risk"]
    due: Day | None = None
    note: Text | None = None


class ActionItem(_Frozen):
    """Something a partner agreed to do."""

    task: Line
    owner: Line
    due: Day | None = None


class MeetingNotes(_Frozen):
    """Notes of a meeting: decisions and action items."""

    kind: Literal["meeting"] = "meeting"
    title: Line
    held_at: Moment
    attendees: list[Line] = Field(default_factory=list, max_length=200)
    summary: Text = ""
    decisions: list[Text] = Field(default_factory=list, max_length=100)
    action_items: list[ActionItem] = Field(default_factory=list, max_length=200)


class Update(_Frozen):
    """A general announcement."""

    kind: Literal["update"] = "update"
    title: Line
    body: Text = ""
    url: HttpUrl | None = None


EventData = Annotated[MetricUpdate | Milestone | MeetingNotes | Update, Field(discriminator="kind")]
DATA_MODELS: Final[dict[EventKind, type[BaseModel]]] = {
    "metric": MetricUpdate,
    "milestone": Milestone,
    "meeting": MeetingNotes,
    "update": Update,
}


class Event(_Frozen):
    """A CloudEvents 1.0 structured-mode event."""

    specversion: Literal["1.0"] = "1.0"
    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
    source: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")]
    type: Annotated[str, Field(max_length=64)]
    time: Moment
    subject: Token = Field(description="the topic, e.g. 'farmers-market' or 'bmi'")
    initiative: Token
    datacontenttype: Literal["application/json"] = "application/json"
    data: EventData

    @model_validator(mode="after")
    def _type_matches_kind(self) -> Event:
        expected = f"{TYPE_PREFIX}{self.data.kind}"
        if self.type != expected:
            raise ValueError(f"type must be {expected!r} for data of kind {self.data.kind!r}")
        return self

    @property
    def kind(self) -> EventKind:
        """The event's kind, from its data."""
        return self.data.kind

    @property
    def topic(self) -> str:
        """The topic (CloudEvents ``subject``)."""
        return self.subject

    @property
    def nats_subject(self) -> str:
        """``impact.<initiative>.<kind>.<topic>``."""
        # The tokens were validated when the (frozen) event was built: format, don't re-check.
        return str(EventSubject(self.initiative, self.kind, self.subject))

    @property
    def key(self) -> str:
        """Idempotency key derived from (``source``, ``id``), used as ``Nats-Msg-Id``."""
        return _event_key(self.source, self.id)


@lru_cache(maxsize=16_384)
def _event_key(source: str, event_id: str) -> str:
    # cached: a digest run dedupes each of its events by key, the router keys every job
    return hashlib.sha256(f"{source}\x00{event_id}".encode()).hexdigest()[:40]


EVENT_ADAPTER: Final = TypeAdapter(Event)
DATA_ADAPTER: Final[TypeAdapter[MetricUpdate | Milestone | MeetingNotes | Update]] = TypeAdapter(
    EventData
)


def new_event(
    kind: str,
    initiative: str,
    topic: str,
    data: dict[str, Any],
    *,
    source: str = DEFAULT_SOURCE,
    event_id: str | None = None,
    time: datetime | None = None,
) -> Event:
    """Complete the short form ``{kind, initiative, topic, data}`` into an :class:`Event`.

    The event is new input: it is checked against the bounds of :mod:`schemas.bounds`.

    Raises:
        InvalidInputError: the data or a token is invalid (message names the field).
    """
    event_subject(initiative, kind, topic)  # clear errors for the tokens first
    payload = {
        "id": event_id or str(ULID()),
        "source": source,
        "type": f"{TYPE_PREFIX}{kind}",
        "time": time or datetime.now(UTC),
        "subject": topic,
        "initiative": initiative,
        "data": {**data, "kind": kind},
    }
    try:
        return EVENT_ADAPTER.validate_python(payload, context=NEW_INPUT)
    except ValidationError as exc:
        raise invalid_fields(exc) from None


def parse_event(raw: bytes | str, *, new: bool = False) -> Event:
    """Validate structured-mode JSON into an :class:`Event`.

    Args:
        raw: the JSON.
        new: whether this is new input (bounds checked), rather than a stored event read
            back under the rules it was accepted with.

    Raises:
        InvalidInputError: the JSON is malformed or breaks the schema.
    """
    try:
        return EVENT_ADAPTER.validate_json(raw, context=NEW_INPUT if new else None)
    except ValidationError as exc:
        raise InvalidInputError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """One line per problem, each with its field path: ``data.title: String should ...``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p)) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def invalid_fields(exc: ValidationError) -> InvalidFieldsError:
    """``exc`` as an :class:`InvalidFieldsError`: the :func:`describe` line plus each problem."""
    problems = tuple(
        FieldProblem(
            loc=tuple(p for p in err["loc"] if not _is_union_tag(p)),
            type=err["type"],
            message=err["msg"],
            ctx={k: str(v) for k, v in (err.get("ctx") or {}).items()},
        )
        for err in exc.errors(include_url=False)
    )
    return InvalidFieldsError(describe(exc), problems)


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and part in DATA_MODELS
