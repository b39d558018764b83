"""The ``impactbus`` command line.

Every command that talks to the hub finds NATS through ``IMPACTBUS_NATS_URL`` or the
running embedded hub (``<data dir>/hub.json``). Bad input prints one clear line and exits
with status 2; an unreachable hub exits with 3; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn, TypeVar

import typer

from schemas.errors import (
    BusUnavailableError,
    ImpactbusError,
    InvalidFieldsError,
    InvalidInputError,
    NotFoundError,
)
from services.cli.words import POST_FLAGS, RECIPIENT_FLAGS, SUBSCRIBE_FLAGS, FlagMap, explain

if TYPE_CHECKING:
    from notifiers.base import LinkMaker
    from services.bus import HubLocation
    from services.config import HubSettings

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

from services.cli.admin import schema, tokens_app  # noqa: E402 - the sub-apps need `app` first
from services.cli.ops import register as register_ops  # noqa: E402

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


def locate() -> tuple[HubLocation, HubSettings]:
    """The hub this command talks to, and the hub settings with its data dir.

    Raises:
        BusUnavailableError: no running hub was found (the message says where it looked).
    """
    from services.bus import NatsSettings, locate_hub
    from services.config import HubSettings

    hub = HubSettings()
    where = locate_hub(NatsSettings(), hub.data_dir, explicit="data_dir" in hub.model_fields_set)
    return where, hub.model_copy(update={"data_dir": where.data_dir})


def run(fn: Callable[..., Awaitable[T]], *args: Any, flags: FlagMap | None = None) -> T:
    """Run an async command body with a connected bus; translate errors to one line.

    Args:
        fn: the body, called as ``fn(bus, *args)``.
        args: more arguments for ``fn``.
        flags: the command's field-to-flag map, to word validation errors in its flags.
    """
    from services.bus import Bus, NatsSettings, map_nats_errors

    async def main() -> T:
        where, _ = locate()
        # NATS going away mid-command is one line and exit 3, like not finding it at all
        with map_nats_errors():
            bus = await Bus.connect(
                where.nats_url, NatsSettings(), name="impactbus-cli", reconnect=False
            )
            try:
                await bus.ensure_topology()
                return await fn(bus, *args)
            finally:
                with contextlib.suppress(Exception):
                    await bus.close()

    try:
        return asyncio.run(main())
    except InvalidFieldsError as exc:
        fail(explain(exc, flags or {}), exit_code(exc))
    except ImpactbusError as exc:
        fail(str(exc), exit_code(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


EXIT_CODES: Final[dict[type[ImpactbusError], int]] = {
    InvalidInputError: 2,
    NotFoundError: 2,
    BusUnavailableError: 3,
    ImpactbusError: 1,
}
"""Exit code per error type, looked up along the raised type's MRO (first match wins)."""


def exit_code(exc: ImpactbusError) -> int:
    """The exit code of a command that failed with ``exc``."""
    return next((EXIT_CODES[c] for c in type(exc).__mro__ if c in EXIT_CODES), 1)


# --------------------------------------------------------------------- running


@app.command()
def up() -> None:
    """Run the whole hub in one process on its embedded defaults, until Ctrl-C.

    Starts a real nats-server (store under ./.impactbus/) unless IMPACTBUS_NATS_URL is set,
    declares the streams and runs the router, the delivery workers and the web/API.
    """
    from services.runtime.hub import SERVICES

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
    from services.runtime.hub import SERVICES

    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        fail(f"unknown service {unknown[0]!r}: use one of {', '.join(SERVICES)}")
    _serve(list(dict.fromkeys(services)), embedded=False)


def _serve(services: list[str], *, embedded: bool = True) -> None:
    from services.config import load_hub_settings
    from services.runtime.hub import serve
    from services.runtime.logs import setup_logging

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
                signin=embedded,
            )
        )
    except BusUnavailableError as exc:
        fail(str(exc), 3)
    except ImpactbusError as exc:
        fail(str(exc), 1)


# ------------------------------------------------------------------ recipients


_CONTACT_HELP: Final = "(an empty value '' removes it)"


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
    """Add a new recipient: a person or a shared channel (`recipients update` changes one)."""
    from services.directory.records import Directory, RecipientExistsError

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
    given = {k: v for k, v in fields.items() if v is not None}

    async def body(bus: Any) -> Any:
        d = await Directory.open(bus)
        try:
            return await d.create_recipient(**given)
        except RecipientExistsError:
            # name the options the user gave, so the fix is one copy-paste away
            options = " ".join(
                f"--{k.replace('_', '-')} {shlex.quote(str(v))}"
                for k, v in given.items()
                if k != "id" and (k, v) not in _ADD_DEFAULTS
            )
            raise InvalidInputError(
                f"recipient {recipient_id!r} already exists; `add` never replaces one. "
                f"Change it with `impactbus recipients update {recipient_id} "
                f"{options or '--email ...'}`"
            ) from None

    r = run(body, flags=RECIPIENT_FLAGS)
    typer.echo(f"recipient {r.id}: {_contacts(r)}; {r.timezone}, digest {r.digest}")


_ADD_DEFAULTS: Final = {("timezone", "UTC"), ("digest", "daily@08:00"), ("locale", "en")}


def _contacts(r: Any) -> str:
    return (
        ", ".join(
            f"{k}={v}"
            for k, v in (("email", r.email), ("slack", r.slack_channel), ("webhook", r.webhook_url))
            if v
        )
        or "no contact yet"
    )


@recipients_app.command("update")
def recipients_update(
    recipient_id: Annotated[str, typer.Argument(metavar="ID", help="the recipient to change")],
    email: Annotated[str | None, typer.Option(help=f"email address {_CONTACT_HELP}")] = None,
    slack_channel: Annotated[
        str | None, typer.Option(help=f"Slack channel id (C123) or #name {_CONTACT_HELP}")
    ] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help=f"HTTPS URL for signed webhooks {_CONTACT_HELP}")
    ] = None,
    name: Annotated[str | None, typer.Option(help="display name ('' removes it)")] = None,
    organisation: Annotated[
        str | None, typer.Option(help="partner organisation ('' removes it)")
    ] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone")] = None,
    digest: Annotated[str | None, typer.Option(help="daily@08:00 or weekly@mon-08:00")] = None,
    locale: Annotated[str | None, typer.Option(help="language for messages")] = None,
    owner: Annotated[
        str | None, typer.Option(help="recipient id told when a target is disabled ('' removes)")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="remove a contact even if subscriptions use it (they are removed)"
        ),
    ] = False,
) -> None:
    """Change some of a recipient's fields; the others keep their values."""
    from services.directory.records import Directory, RecipientUpdate

    given = {
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
    # '' clears a field that may be empty; a required one (time zone...) gets its error
    changes: dict[str, object] = {
        k: (None if v == "" and k in _CLEARABLE else v) for k, v in given.items() if v is not None
    }
    if not changes:
        fail(
            "nothing to change: give at least one option (see `impactbus recipients update --help`)"
        )

    async def body(bus: Any) -> RecipientUpdate:
        d = await Directory.open(bus)
        return await d.update_recipient(recipient_id, changes, force=force)

    done = run(body, flags=RECIPIENT_FLAGS)
    r = done.recipient
    for sub in done.stopped:
        typer.echo(f"stopped subscription {sub.id}: {sub.pattern} via {sub.channel}", err=True)
    what = ", ".join(f.replace("_", " ") for f in done.changed) or "nothing (same values)"
    typer.echo(
        f"recipient {r.id} updated ({what}): {_contacts(r)}; {r.timezone}, digest {r.digest}"
    )


_CLEARABLE: Final = {"email", "slack_channel", "webhook_url", "name", "organisation", "owner"}


@recipients_app.command("list")
def recipients_list() -> None:
    """List every recipient."""
    from services.directory.records import Directory

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
    from services.directory.records import Directory

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
    from services.directory.records import Directory

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
    from services.directory.records import Directory

    async def body(bus: Any) -> Any:
        return await (await Directory.open(bus)).subscribe(
            recipient, pattern, via.value, mode.value
        )

    s = run(body, flags=SUBSCRIBE_FLAGS)
    typer.echo(f"subscribed {s.recipient} to {s.pattern} via {s.channel} ({s.mode}); id {s.id}")


@app.command()
def unsubscribe(sub_id: Annotated[str, typer.Argument(metavar="SUBSCRIPTION_ID")]) -> None:
    """Remove one subscription (ids: `impactbus subscriptions`)."""
    from services.directory.records import Directory

    async def body(bus: Any) -> Any:
        return await (await Directory.open(bus)).unsubscribe(sub_id)

    s = run(body)
    typer.echo(f"unsubscribed {s.recipient} from {s.pattern} via {s.channel}")


@app.command()
def subscriptions(
    recipient: Annotated[str | None, typer.Option(help="only this recipient's")] = None,
) -> None:
    """List subscriptions."""
    from services.directory.records import Directory

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


# --------------------------------------------------------------- observation


@app.command()
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


outbox_app = typer.Typer(
    help="What the dev outbox caught (when no SMTP server or Slack token is configured).",
    invoke_without_command=True,
)
app.add_typer(outbox_app, name="outbox")


@outbox_app.callback()
def outbox(
    ctx: typer.Context,
    channel: Annotated[Via | None, typer.Option(help="only this channel")] = None,
    limit: Annotated[int, typer.Option(help="how many, newest last")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print raw JSON lines")] = False,
) -> None:
    """One line per message caught: number, time, channel, to, subject (`outbox show N`)."""
    if ctx.invoked_subcommand is not None:
        return
    from services.bus.outbox import read_outbox

    async def body(bus: Any) -> list[dict[str, Any]]:
        return await read_outbox(bus.js, channel.value if channel else None, limit)

    entries = run(body)
    if not entries:
        typer.echo("the outbox is empty")
    for e in entries:
        typer.echo(json.dumps(e) if as_json else outbox_line(e))


def _one_line(value: object, width: int) -> str:
    text = " ".join(str(value or "").split())  # newlines and runs of spaces: one space
    return text if len(text) <= width else text[: width - 1] + "…"


def outbox_line(entry: dict[str, Any]) -> str:
    """An outbox entry as one line: number, time (UTC), channel, to, subject."""
    when = str(entry.get("sent_at", ""))[:19].replace("T", " ")
    channel = str(entry.get("channel", "?"))
    if channel == "email":
        to, subject = entry.get("to"), entry.get("subject")
    else:  # Slack has no subject: its text's start stands in for it
        to, subject = entry.get("conversation"), entry.get("text")
    return (
        f"{entry.get('seq', ''):>5}  {when:<19}  {channel:<6} {_one_line(to, 40):<40}  "
        f"{_one_line(subject, 80)}"
    )


@outbox_app.command("show")
def outbox_show(
    number: Annotated[str, typer.Argument(metavar="N", help="the number `impactbus outbox` shows")],
) -> None:
    """Print one caught message: its headers and its text part."""
    from services.bus.outbox import get_outbox_entry

    if not number.isdigit() or int(number) < 1:
        fail(f"outbox message {number!r}: use the number `impactbus outbox` shows")

    async def body(bus: Any) -> dict[str, Any]:
        return await get_outbox_entry(bus.js, int(number))

    entry = run(body)
    if entry.get("channel") == "email":
        headers = entry.get("headers") or {"To": entry.get("to"), "Subject": entry.get("subject")}
        for name, value in headers.items():
            typer.echo(f"{name}: {value}")
    else:
        typer.echo(f"Channel: {entry.get('channel')}")
        typer.echo(f"Conversation: {entry.get('conversation')}")
    typer.echo(f"X-Impactbus-Sent-At: {entry.get('sent_at')}")
    typer.echo("")
    typer.echo(str(entry.get("text") or ""))


@app.command()
def demo() -> None:
    """Run the hub on its embedded defaults, filled with two initiatives' story, until Ctrl-C."""
    from services.runtime.demo import run_demo

    run_demo()


# ---------------------------------------------------------------------- digest


def hub_links() -> LinkMaker:
    """The link maker of the running hub, as its services build it (same key, same URL).

    The key is the hub's (``IMPACTBUS_SECRET_KEY`` or its data dir's), and the base URL
    the one the hub recorded, unless ``IMPACTBUS_PUBLIC_URL`` says otherwise.
    """
    from services.directory.links import link_maker

    where, hub = locate()
    recorded = where.info.get("http")
    if hub.public_url is None and isinstance(recorded, str):
        hub = hub.model_copy(update={"public_url": recorded})
    return link_maker(hub)


@digest_app.command("preview")
def digest_preview(
    recipient: Annotated[str, typer.Argument(help="recipient id")],
    html: Annotated[
        bool, typer.Option("--html", help="print the HTML part instead of text")
    ] = False,
) -> None:
    """Print the digest the recipient would get now (sends and purges nothing)."""
    from services.digest.service import DigestService

    async def body(bus: Any) -> Any:
        return await (await DigestService.open(bus, links=hub_links())).preview(recipient)

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
    from services.digest.service import DigestService

    async def body(bus: Any) -> Any:
        # the same links as the scheduled digest: preferences and one-click unsubscribe
        service = await DigestService.open(bus, links=hub_links())
        return await service.run(recipient, datetime.now(UTC), manual=True)

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
