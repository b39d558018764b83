"""``impactbus post`` (an event onto the bus) and ``tail`` (events as they come)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from schemas.errors import (
    InvalidFieldsError,
    InvalidInputError,
)
from services.cli.base import Kind, fail, run
from services.cli.words import POST_FLAGS, explain


def post(
    kind: Annotated[Kind, typer.Argument(help="metric | milestone | meeting | update")],
    initiative: Annotated[str, typer.Option(help="initiative id, e.g. somerville")],
    topic: Annotated[str, typer.Option(help="topic, e.g. farmers-market or bmi")],
    title: Annotated[str | None, typer.Option(help="milestone/meeting/update title")] = None,
    status: Annotated[
        str | None, typer.Option(help="milestone: planned|reached|missed|at-risk")
    ] = None,
    due: Annotated[str | None, typer.Option(help="milestone due date YYYY-MM-DD")] = None,
    body: Annotated[str | None, typer.Option(help="update text")] = None,
    url: Annotated[str | None, typer.Option(help="update link")] = None,
    indicator: Annotated[str | None, typer.Option(help="metric: indicator name")] = None,
    value: Annotated[float | None, typer.Option(help="metric: new value")] = None,
    unit: Annotated[str | None, typer.Option(help="metric: unit")] = None,
    period: Annotated[str | None, typer.Option(help="metric: period, e.g. 2026-10")] = None,
    baseline: Annotated[float | None, typer.Option(help="metric: baseline")] = None,
    target: Annotated[float | None, typer.Option(help="metric: target")] = None,
    direction: Annotated[str | None, typer.Option(help="metric: increase|decrease is good")] = None,
    note: Annotated[str | None, typer.Option(help="metric/milestone note")] = None,
    held_at: Annotated[str | None, typer.Option(help="meeting: ISO date-time")] = None,
    attendee: Annotated[list[str] | None, typer.Option(help="meeting attendee (repeat)")] = None,
    summary: Annotated[str | None, typer.Option(help="meeting summary")] = None,
    decision: Annotated[list[str] | None, typer.Option(help="meeting decision (repeat)")] = None,
    action: Annotated[
        list[str] | None,
        typer.Option(help="meeting action item 'task | owner | YYYY-MM-DD' (repeat)"),
    ] = None,
    source: Annotated[str, typer.Option(help="CloudEvents source")] = "urn:impactbus:cli",
    event_id: Annotated[
        str | None, typer.Option("--id", help="event id (default: a new ULID)")
    ] = None,
) -> None:
    """Post an event: it is stored in JetStream and delivered to every subscriber."""
    from schemas.events import new_event
    from services.pipeline.ingest import publish_event

    data: dict[str, Any] = {
        "title": title,
        "status": status,
        "due": due,
        "body": body,
        "url": url,
        "indicator": indicator,
        "value": value,
        "unit": unit,
        "period": period,
        "baseline": baseline,
        "target": target,
        "direction": direction,
        "note": note,
        "held_at": held_at,
        "summary": summary,
        "attendees": attendee or None,
        "decisions": decision or None,
        "action_items": [_action(a) for a in action] if action else None,
    }
    allowed = _FIELDS[kind.value]
    given = {k: v for k, v in data.items() if v is not None}
    extra = sorted(set(given) - allowed)
    if extra:
        fail(f"{kind.value} takes no {', '.join('--' + e.replace('_', '-') for e in extra)}")
    try:
        event = new_event(kind.value, initiative, topic, given, source=source, event_id=event_id)
    except InvalidFieldsError as exc:
        fail(explain(exc, POST_FLAGS))
    except InvalidInputError as exc:
        fail(str(exc))

    async def publish(bus: Any) -> Any:
        return await publish_event(bus, event)

    p = run(publish)
    dup = " (duplicate: already stored)" if p.duplicate else ""
    typer.echo(f"posted {event.id} on {p.subject}{dup}")


_FIELDS = {
    "metric": {"indicator", "value", "unit", "period", "baseline", "target", "direction", "note"},
    "milestone": {"title", "status", "due", "note"},
    "meeting": {"title", "held_at", "attendees", "summary", "decisions", "action_items"},
    "update": {"title", "body", "url"},
}


def _action(spec: str) -> dict[str, str]:
    parts = [p.strip() for p in spec.split("|")]
    if len(parts) not in (2, 3) or not all(parts):
        fail(f"--action {spec!r}: use 'task | owner' or 'task | owner | YYYY-MM-DD'")
    item = {"task": parts[0], "owner": parts[1]}
    if len(parts) == 3:
        item["due"] = parts[2]
    return item


def tail(
    pattern: Annotated[str, typer.Argument(help="subject pattern")] = "impact.>",
    last: Annotated[int, typer.Option(help="also print the last N stored events")] = 0,
    count: Annotated[int | None, typer.Option(help="exit after N events")] = None,
) -> None:
    """Print events live as they are posted (Ctrl-C to stop)."""
    from schemas.subjects import validate_pattern
    from services.bus import EVENTS
    from services.bus.streams import follow

    try:
        validate_pattern(pattern)
    except InvalidInputError as exc:
        fail(str(exc))

    async def body(bus: Any) -> None:
        seen = 0
        events = await follow(bus, EVENTS, pattern, last=last)
        typer.echo(f"watching {pattern} (Ctrl-C to stop)", err=True)
        try:
            async for msg in events:
                typer.echo(_event_line(msg.subject, msg.data))
                seen += 1
                if count is not None and seen >= count:
                    break
        finally:
            await events.aclose()

    run(body)


def _event_line(subject: str, data: bytes) -> str:
    try:
        ev = json.loads(data)
        d = ev.get("data", {})
        what = d.get("title") or (
            f"{d.get('indicator')} = {d.get('value')} {d.get('unit') or ''}".strip()
        )
        return f"{ev.get('time', '')[:19]}  {subject}  {what}  [{ev.get('id')}]"
    except (ValueError, AttributeError):
        return f"{subject}  (unreadable payload, {len(data)} bytes)"
