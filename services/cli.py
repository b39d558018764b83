"""The ``impactbus`` command line.

Every command that talks to the hub finds NATS through ``IMPACTBUS_NATS_URL`` or the
running embedded hub (``<data dir>/hub.json``). Bad input prints one clear line and exits
with status 2; an unreachable hub exits with 3; never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from schemas.errors import BusUnavailableError, ImpactbusError, InvalidInputError, NotFoundError

T = TypeVar("T")

app = typer.Typer(
    name="impactbus",
    help="impactbus: continuous communication for Collective Impact partnerships.\n\n"
    "Start the hub with `impactbus up` (or `make up`), then add recipients, subscribe them "
    "to initiative events and post updates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
recipients_app = typer.Typer(help="Add, list, show and remove recipients.", no_args_is_help=True)
app.add_typer(recipients_app, name="recipients")
digest_app = typer.Typer(help="Preview or send a recipient's digest now.", no_args_is_help=True)
app.add_typer(digest_app, name="digest")

from services.cli_admin import schema, tokens_app  # noqa: E402 - the sub-apps need `app` first
from services.cli_ops import register as register_ops  # noqa: E402

app.add_typer(tokens_app, name="tokens")
app.command()(schema)
# dead list|show|replay|purge, log, webhook-secret show|rotate, recipients enable
register_ops(app, recipients_app)


class Via(StrEnum):
    email = "email"
    slack = "slack"
    webhook = "webhook"


class Mode(StrEnum):
    immediate = "immediate"
    digest = "digest"


class Kind(StrEnum):
    metric = "metric"
    milestone = "milestone"
    meeting = "meeting"
    update = "update"


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run an async command body with a connected bus; translate errors to one line."""
    from services.bus import Bus, NatsSettings, resolve_nats_url
    from services.config import HubSettings

    async def main() -> T:
        settings = NatsSettings()
        url = resolve_nats_url(settings, HubSettings().data_dir)
        bus = await Bus.connect(url, settings, name="impactbus-cli", reconnect=False)
        try:
            await bus.ensure_topology()
            return await fn(bus, *args)
        finally:
            await bus.close()

    try:
        return asyncio.run(main())
    except (InvalidInputError, NotFoundError) as exc:
        fail(str(exc), 2)
    except BusUnavailableError as exc:
        fail(str(exc), 3)
    except ImpactbusError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# --------------------------------------------------------------------- running


@app.command()
def up() -> None:
    """Run the whole hub in one process on its embedded defaults, until Ctrl-C.

    Starts a real nats-server (store under ./.impactbus/) unless IMPACTBUS_NATS_URL is set,
    declares the streams and runs the router, the delivery workers and the web/API.
    """
    from services.hub import SERVICES

    _serve(list(SERVICES), embedded=True)


@app.command("run")
def run_service(
    services: Annotated[
        list[str], typer.Argument(help="one or more of: api, router, email, slack, webhook, digest")
    ],
) -> None:
    """Run some services against IMPACTBUS_NATS_URL (or the running hub's NATS).

    Scale out by running more copies: copies share the work through durable consumers.
    """
    from services.hub import SERVICES

    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        fail(f"unknown service {unknown[0]!r}: use one of {', '.join(SERVICES)}")
    _serve(list(dict.fromkeys(services)), embedded=False)


def _serve(services: list[str], *, embedded: bool = True) -> None:
    from services.config import load_hub_settings
    from services.hub import serve
    from services.logs import setup_logging

    try:
        hub = load_hub_settings()  # a wrong IMPACTBUS_* value stops the start, in words
    except InvalidInputError as exc:
        fail(str(exc), 2)
    setup_logging(hub.log_format, hub.log_level)
    from services.bus import read_hub_file

    if embedded and read_hub_file(hub.data_dir):
        fail(f"a hub is already running in {hub.data_dir} (see {hub.data_dir}/hub.json)", 1)
    try:
        asyncio.run(
            serve(
                services,
                hub=hub,
                start_embedded=embedded,
                announce=lambda s: typer.echo(s, err=False),
            )
        )
    except BusUnavailableError as exc:
        fail(str(exc), 3)
    except ImpactbusError as exc:
        fail(str(exc), 1)


# ------------------------------------------------------------------ recipients


@recipients_app.command("add")
def recipients_add(
    recipient_id: Annotated[str, typer.Argument(metavar="ID", help="e.g. maria (a-z, 0-9, -, _)")],
    email: Annotated[str | None, typer.Option(help="email address")] = None,
    slack_channel: Annotated[
        str | None, typer.Option(help="Slack channel id (C123) or #name")
    ] = None,
    webhook_url: Annotated[str | None, typer.Option(help="HTTPS URL for signed webhooks")] = None,
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    organisation: Annotated[str | None, typer.Option(help="partner organisation")] = None,
    timezone: Annotated[str, typer.Option(help="IANA time zone, e.g. America/New_York")] = "UTC",
    digest: Annotated[str, typer.Option(help="daily@08:00 or weekly@mon-08:00")] = "daily@08:00",
    locale: Annotated[str, typer.Option(help="language for messages")] = "en",
    owner: Annotated[
        str | None,
        typer.Option(
            help="recipient id told by email if one of this recipient's targets is disabled"
        ),
    ] = None,
) -> None:
    """Add (or replace) a recipient: a person or a shared channel."""
    from services.directory import Directory

    async def body(bus: Any) -> Any:
        d = await Directory.open(bus)
        fields = {
            "id": recipient_id,
            "email": email,
            "slack_channel": slack_channel,
            "webhook_url": webhook_url,
            "name": name,
            "organisation": organisation,
            "timezone": timezone,
            "digest": digest,
            "locale": locale,
            "owner": owner,
        }
        return await d.add_recipient(**{k: v for k, v in fields.items() if v is not None})

    r = run(body)
    contacts = (
        ", ".join(
            f"{k}={v}"
            for k, v in (("email", r.email), ("slack", r.slack_channel), ("webhook", r.webhook_url))
            if v
        )
        or "no contact yet"
    )
    typer.echo(f"recipient {r.id}: {contacts}; {r.timezone}, digest {r.digest}")


@recipients_app.command("list")
def recipients_list() -> None:
    """List every recipient."""
    from services.directory import Directory

    async def body(bus: Any) -> Any:
        return await (await Directory.open(bus)).list_recipients()

    rows = run(body)
    if not rows:
        typer.echo("no recipients yet: impactbus recipients add --help")
    for r in rows:
        contacts = " ".join(
            v for v in (r.email, r.slack_channel, r.webhook_url and str(r.webhook_url)) if v
        )
        typer.echo(f"{r.id:<20} {contacts:<40} {r.timezone:<20} {r.digest}")


@recipients_app.command("show")
def recipients_show(recipient_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one recipient and their subscriptions as JSON."""
    from services.directory import Directory

    async def body(bus: Any) -> Any:
        d = await Directory.open(bus)
        r = await d.get_recipient(recipient_id)
        subs = await d.list_subscriptions(recipient=recipient_id)
        return {
            **r.model_dump(mode="json"),
            "subscriptions": [s.model_dump(mode="json") for s in subs],
        }

    typer.echo(json.dumps(run(body), indent=2))


@recipients_app.command("remove")
def recipients_remove(recipient_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Remove a recipient and all their subscriptions."""
    from services.directory import Directory

    async def body(bus: Any) -> None:
        await (await Directory.open(bus)).delete_recipient(recipient_id)

    run(body)
    typer.echo(f"removed {recipient_id}")


# --------------------------------------------------------------- subscriptions


@app.command()
def subscribe(
    recipient: Annotated[str, typer.Argument(help="recipient id")],
    pattern: Annotated[
        str,
        typer.Argument(
            help="subject pattern: 'impact.somerville.>', 'impact.*.milestone.>', "
            "'impact.somerville.metric.bmi'"
        ),
    ],
    via: Annotated[Via, typer.Option(help="channel")] = Via.email,
    mode: Annotated[
        Mode, typer.Option(help="immediate, or collected into their digest")
    ] = Mode.immediate,
) -> None:
    """Subscribe a recipient to events matching a pattern."""
    from services.directory import Directory

    async def body(bus: Any) -> Any:
        return await (await Directory.open(bus)).subscribe(
            recipient, pattern, via.value, mode.value
        )

    s = run(body)
    typer.echo(f"subscribed {s.recipient} to {s.pattern} via {s.channel} ({s.mode}); id {s.id}")


@app.command()
def unsubscribe(sub_id: Annotated[str, typer.Argument(metavar="SUBSCRIPTION_ID")]) -> None:
    """Remove one subscription (ids: `impactbus subscriptions`)."""
    from services.directory import Directory

    async def body(bus: Any) -> Any:
        return await (await Directory.open(bus)).unsubscribe(sub_id)

    s = run(body)
    typer.echo(f"unsubscribed {s.recipient} from {s.pattern} via {s.channel}")


@app.command()
def subscriptions(
    recipient: Annotated[str | None, typer.Option(help="only this recipient's")] = None,
) -> None:
    """List subscriptions."""
    from services.directory import Directory

    async def body(bus: Any) -> Any:
        return await (await Directory.open(bus)).list_subscriptions(recipient)

    rows = run(body)
    if not rows:
        typer.echo("no subscriptions yet: impactbus subscribe --help")
    for s in rows:
        typer.echo(f"{s.id:<30} {s.recipient:<16} {s.pattern:<36} {s.channel:<8} {s.mode}")


# ------------------------------------------------------------------------ post


@app.command()
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
    from services.publish import publish_event

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


# --------------------------------------------------------------- observation


@app.command()
def tail(
    pattern: Annotated[str, typer.Argument(help="subject pattern")] = "impact.>",
    last: Annotated[int, typer.Option(help="also print the last N stored events")] = 0,
    count: Annotated[int | None, typer.Option(help="exit after N events")] = None,
) -> None:
    """Print events live as they are posted (Ctrl-C to stop)."""
    from nats.js import api

    from schemas.subjects import validate_pattern
    from services.bus import EVENTS

    try:
        validate_pattern(pattern)
    except InvalidInputError as exc:
        fail(str(exc))

    async def body(bus: Any) -> None:
        seen = 0
        policy = api.DeliverPolicy.NEW
        opt_start: int | None = None
        if last:
            info = await bus.js.stream_info(EVENTS)
            opt_start = max(1, info.state.last_seq - last + 1)
            policy = api.DeliverPolicy.BY_START_SEQUENCE
        sub = await bus.js.subscribe(
            pattern,
            stream=EVENTS,
            ordered_consumer=True,
            deliver_policy=policy,
            config=api.ConsumerConfig(opt_start_seq=opt_start),
        )
        typer.echo(f"watching {pattern} (Ctrl-C to stop)", err=True)
        async for msg in sub.messages:
            typer.echo(_event_line(msg.subject, msg.data))
            seen += 1
            if count is not None and seen >= count:
                break
        await sub.unsubscribe()

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


@app.command()
def status() -> None:
    """Streams, consumers and pending counts."""

    async def body(bus: Any) -> list[str]:
        lines = [f"{'stream':<14}{'messages':>10}{'bytes':>12}  consumers (pending / unacked)"]
        for info in sorted(await bus.js.streams_info(), key=lambda i: i.config.name):
            if info.config.name.startswith("KV_"):
                continue
            consumers = []
            for c in await bus.js.consumers_info(info.config.name):
                if c.config.durable_name:
                    consumers.append(f"{c.name} {c.num_pending}/{c.num_ack_pending}")
            lines.append(
                f"{info.config.name:<14}{info.state.messages:>10}{info.state.bytes:>12}  "
                + ", ".join(consumers)
            )
        return lines

    for line in run(body):
        typer.echo(line)


@app.command()
def outbox(
    channel: Annotated[Via | None, typer.Option(help="only this channel")] = None,
    limit: Annotated[int, typer.Option(help="how many, newest last")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print raw JSON lines")] = False,
) -> None:
    """What the dev outbox caught (when no SMTP server or Slack token is configured)."""
    from notifiers.outbox import read_outbox

    async def body(bus: Any) -> list[dict[str, Any]]:
        return await read_outbox(bus.js, channel.value if channel else None, limit)

    entries = run(body)
    if not entries:
        typer.echo("the outbox is empty")
    for e in entries:
        if as_json:
            typer.echo(json.dumps(e))
        elif e.get("channel") == "email":
            typer.echo(f"{e.get('sent_at', '')[:19]}  email  to {e.get('to')}  {e.get('subject')}")
        else:
            typer.echo(
                f"{e.get('sent_at', '')[:19]}  {e.get('channel')}  {e.get('conversation')}  "
                f"{(e.get('text') or '')[:80]}"
            )


@app.command()
def demo() -> None:
    """Run the hub on its embedded defaults, filled with two initiatives' story, until Ctrl-C."""
    from services.demo import run_demo

    run_demo()


# ---------------------------------------------------------------------- digest


@digest_app.command("preview")
def digest_preview(
    recipient: Annotated[str, typer.Argument(help="recipient id")],
    html: Annotated[
        bool, typer.Option("--html", help="print the HTML part instead of text")
    ] = False,
) -> None:
    """Print the digest the recipient would get now (sends and purges nothing)."""
    from services.digest import DigestService

    async def body(bus: Any) -> Any:
        return await (await DigestService.open(bus)).preview(recipient)

    result = run(body)
    if not result.deliveries:
        typer.echo(f"nothing new for {recipient}: no digest would be sent")
        return
    rendered = result.deliveries[0].rendered
    assert rendered is not None
    typer.echo(
        f"Subject: {rendered.subject}  ({result.items} items, via {', '.join(result.channels)})"
    )
    typer.echo("")
    typer.echo(rendered.html if html and rendered.html else rendered.text)


@digest_app.command("send-now")
def digest_send_now(recipient: Annotated[str, typer.Argument(help="recipient id")]) -> None:
    """Send the recipient's digest now and clear their waiting items."""
    from services.digest import DigestService

    async def body(bus: Any) -> Any:
        return await (await DigestService.open(bus)).run(recipient, datetime.now(UTC), manual=True)

    result = run(body)
    if result.outcome != "sent":
        typer.echo(f"nothing new for {recipient}: no digest sent")
        return
    via = ", ".join(result.channels)
    typer.echo(f"queued the digest of {result.items} items for {recipient} via {via}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
