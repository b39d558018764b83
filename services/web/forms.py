"""HTML forms: reading ``application/x-www-form-urlencoded`` bodies, and the post form.

:func:`event_from_form` turns the fields of the "post an update" form into an
:class:`~schemas.events.Event`, validated by the one ``EVENT_ADAPTER``; each pydantic error
is mapped from its location (``data.meeting.action_items.2.owner``) to the form field it
belongs to (``action_items``: "line 3: owner: required"), so the page can show it next to
that field. Pure functions, tested with tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from fastapi import Request
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.bounds import NEW_INPUT
from schemas.errors import InvalidInputError
from schemas.events import DATA_MODELS, EVENT_ADAPTER, TYPE_PREFIX, Event
from schemas.subjects import EVENT_KINDS, EventKind
from services.api.state import read_body
from services.web.words import slug

MAX_FORM_BYTES: Final = 128 * 1024
MAX_FIELDS: Final = 1000

# The fields of each kind's form, in order; every one maps to a ``data`` field except the
# meeting's time zone, which completes ``held_at``.
KIND_FIELDS: Final[dict[EventKind, tuple[str, ...]]] = {
    "metric": ("indicator", "value", "unit", "period", "baseline", "target", "direction", "note"),
    "milestone": ("title", "status", "due", "note"),
    "meeting": (
        "title",
        "held_at",
        "held_tz",
        "attendees",
        "summary",
        "decisions",
        "action_items",
    ),
    "update": ("title", "body", "url"),
}
LIST_FIELDS: Final = frozenset({"attendees", "decisions"})
NUMBER_FIELDS: Final = frozenset({"value", "baseline", "target"})
COMMON_FIELDS: Final = ("initiative", "kind", "topic", "event_id")


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form body (the last value of a repeated field).

    Raises:
        BodyTooLargeError: over 128 KiB.
        InvalidInputError: not UTF-8, or too many fields.
    """
    body = await read_body(request, MAX_FORM_BYTES)
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"unreadable form: {exc}") from None
    return dict(pairs)


def kind_of(value: str | None) -> EventKind | None:
    """``value`` if it names an event kind."""
    for kind in EVENT_KINDS:
        if value == kind:
            return kind
    return None


@dataclass
class FormResult:
    """An event built from the form, or the errors to show beside its fields."""

    event: Event | None = None
    errors: dict[str, str] = field(default_factory=dict)


def event_from_form(
    form: dict[str, str],
    kind: EventKind,
    initiative: str,
    *,
    source: str,
    event_id: str,
    now: datetime,
) -> FormResult:
    """Validate the post form into an event; nothing is published here.

    Args:
        form: the submitted fields.
        kind: the chosen kind.
        initiative: the chosen initiative (the caller checks it may publish there).
        source: the CloudEvents ``source`` (the signed-in token's).
        event_id: the event's id, fixed when the form was first shown, so that a form
            submitted twice publishes once (``Nats-Msg-Id`` = hash(source, id)).
        now: the event's time.
    """
    errors: dict[str, str] = {}
    data: dict[str, object] = {"kind": kind}
    for name in KIND_FIELDS[kind]:
        value = form.get(name, "").strip()
        if name == "held_tz" or not value:
            continue
        if name in LIST_FIELDS:
            data[name] = [line.strip() for line in value.splitlines() if line.strip()]
        elif name == "action_items":
            data[name] = _action_items(value, errors)
        elif name == "held_at":
            data[name] = _held_at(value, form.get("held_tz", "UTC"), errors)
        elif name in NUMBER_FIELDS:
            data[name] = _number(name, value, errors)
        else:
            data[name] = value
    title = str(data.get("title") or data.get("indicator") or "")
    given = form.get("topic", "").strip()
    topic = given or slug(title)
    payload = {
        "id": event_id,
        "source": source,
        "type": f"{TYPE_PREFIX}{kind}",
        "time": now,
        "subject": topic,
        "initiative": initiative,
        "data": data,
    }
    if not errors:
        try:
            return FormResult(EVENT_ADAPTER.validate_python(payload, context=NEW_INPUT), {})
        except ValidationError as exc:
            errors = field_errors(exc)
    else:  # a field that could not even be read: report the others' errors too
        _collect(payload, errors)
    if not given and not topic:
        errors.pop("topic", None)  # made from an empty title: the title's error says it
    return FormResult(None, errors)


def _collect(payload: dict[str, object], errors: dict[str, str]) -> None:
    try:
        EVENT_ADAPTER.validate_python(payload, context=NEW_INPUT)
    except ValidationError as exc:
        for name, message in field_errors(exc).items():
            errors.setdefault(name, message)


def _action_items(value: str, errors: dict[str, str]) -> list[dict[str, str]]:
    items: list[dict[str, str]] = []
    for n, line in enumerate(value.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 2 or len(parts) > 3 or not parts[1]:
            errors.setdefault("action_items", f"line {n}: write task | owner | due date (optional)")
            continue
        item = {"task": parts[0], "owner": parts[1]}
        if len(parts) == 3 and parts[2]:
            item["due"] = parts[2]
        items.append(item)
    return items


def _number(name: str, value: str, errors: dict[str, str]) -> object:
    # A form field is always text: read the number here, since new input must be a number
    # (the schema then checks that it is finite and within its bounds).
    try:
        return float(value.replace(",", ""))
    except ValueError:
        errors[name] = "must be a valid number, such as 42 or 12.5"
        return value


def _held_at(value: str, tz: str, errors: dict[str, str]) -> object:
    try:
        moment = datetime.fromisoformat(value)
        zone = ZoneInfo(tz or "UTC")
    except (ValueError, KeyError):
        errors["held_at"] = "use a date and time such as 2026-11-03 18:00, and a valid time zone"
        return value
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def field_errors(exc: ValidationError) -> dict[str, str]:
    """Map each error's location to the form field it belongs to, with a readable message.

    ``subject`` -> ``topic``; ``data.<kind>.<field>`` -> ``<field>``; an error inside a
    list names its line (``line 3: owner: required``). The first error of a field wins.
    """
    errors: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        name, detail = _locate(err)
        errors.setdefault(name, detail + _message(err))
    return errors


def _locate(err: ErrorDetails) -> tuple[str, str]:
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in DATA_MODELS)]
    if not loc:
        return "_form", ""
    if loc[0] == "subject":
        return "topic", ""
    if loc[0] != "data" or len(loc) < 2:
        return str(loc[0]), ""
    name, rest = str(loc[1]), loc[2:]
    if rest and isinstance(rest[0], int):
        line = f"line {rest[0] + 1}: "
        return name, line + (f"{rest[1]}: " if len(rest) > 1 else "")
    return name, ""


def _message(err: ErrorDetails) -> str:
    ctx = err.get("ctx") or {}
    if err["type"] == "missing" or (
        err["type"] == "string_too_short" and ctx.get("min_length") == 1
    ):
        return "required"
    return str(err["msg"]).removeprefix("Value error, ")
