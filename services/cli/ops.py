"""Operations commands: ``dead``, ``log``, ``webhook-secret`` and ``status``.

Like every command, they print one ``error: ...`` line and exit 2 for bad input or
something that does not exist, 3 when the hub cannot be reached.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from services.cli.base import fail, run

if TYPE_CHECKING:
    from services.bus import Bus
    from services.pipeline.deadletters import DeadLetter

dead_app = typer.Typer(
    help="Dead letters: deliveries that failed for good, and invalid events.",
    no_args_is_help=True,
)
webhook_secret_app = typer.Typer(
    help="Show or rotate a recipient's webhook signing secret.", no_args_is_help=True
)


def _seq(value: str) -> int:

    if not value.isdigit() or int(value) < 1:
        fail(f"dead letter number {value!r}: use the number `impactbus dead list` shows")
    return int(value)


def _line(d: DeadLetter) -> str:
    when = d.failed_at[:19].replace("T", " ")
    who = d.recipient or "-"
    where = d.channel or "-"
    what = d.error if d.replayable else f"{d.original_subject or '?'}: {d.error}"
    what = what[: 200 - len(d.note)] + d.note
    attempts = str(d.attempts) if d.attempts is not None else "-"
    return (
        f"{d.seq:>6}  {when:<19}  {d.reason:<12} {d.initiative:<16} {where:<8} {who:<16} "
        f"{attempts:>3}  {what[:200]}"
    )


# ------------------------------------------------------------------------------ dead


@dead_app.command("list")
def dead_list(
    reason: Annotated[
        str | None, typer.Option(help="only this reason: rejected, exhausted, gone, invalid...")
    ] = None,
    initiative: Annotated[str | None, typer.Option(help="only this initiative")] = None,
    limit: Annotated[int, typer.Option(help="show the newest N")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """List dead letters, oldest first (numbers are for show/replay)."""
    from services.pipeline.deadletters import list_dead

    async def body(bus: Bus) -> tuple[list[DeadLetter], int]:
        return await list_dead(bus, reason=reason, initiative=initiative, limit=limit)

    letters, total = run(body)
    if not letters:
        if not as_json:
            typer.echo("no dead letters")
        return
    if as_json:
        for d in letters:
            typer.echo(json.dumps(d.as_json()))
        return
    typer.echo(
        f"{'number':>6}  {'failed at (UTC)':<19}  {'reason':<12} {'initiative':<16} "
        f"{'channel':<8} {'recipient':<16} {'try':>3}  error"
    )
    for d in letters:
        typer.echo(_line(d))
    if total > len(letters):
        typer.echo(f"(the newest {len(letters)} of {total}: --limit {total} shows all)", err=True)


@dead_app.command("show")
def dead_show(seq: Annotated[str, typer.Argument(metavar="NUMBER")]) -> None:
    """Show one dead letter in full, as JSON (with the job or the original payload)."""
    from services.pipeline.deadletters import get_dead

    number = _seq(seq)

    async def body(bus: Bus) -> DeadLetter:
        return await get_dead(bus, number)

    typer.echo(json.dumps(run(body).as_json(), indent=2))


@dead_app.command("replay")
def dead_replay(
    seq: Annotated[str | None, typer.Argument(metavar="[NUMBER]")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="every matching dead letter")] = False,
    reason: Annotated[str | None, typer.Option(help="with --all: only this reason")] = None,
    initiative: Annotated[str | None, typer.Option(help="with --all: only this initiative")] = None,
) -> None:
    """Queue failed deliveries again (same job id), and delete their dead letters."""
    from services.pipeline.deadletters import ReplayReport, replay
    from services.pipeline.deadletters import replay_all as replay_every

    if seq is not None and replay_all:
        fail("give a dead letter number or --all, not both")
    if seq is None and not replay_all:
        fail("give a dead letter number (see `impactbus dead list`) or --all")
    if seq is not None and (reason or initiative):
        fail("--reason and --initiative go with --all")
    if seq is not None:
        number = _seq(seq)

        async def one(bus: Bus) -> DeadLetter:
            return await replay(bus, number)

        d = run(one)
        typer.echo(f"replayed dead letter {d.seq}: {d.channel} to {d.recipient} queued again")
        return

    async def every(bus: Bus) -> ReplayReport:
        return await replay_every(bus, reason=reason, initiative=initiative)

    report = run(every)
    for d, why in report.skipped:
        typer.echo(f"skipped {d.seq}: {why}", err=True)
    n = len(report.replayed)
    typer.echo(f"replayed {n} dead letter{'s' if n != 1 else ''}")


@dead_app.command("purge")
def dead_purge(
    reason: Annotated[str | None, typer.Option(help="only this reason")] = None,
    initiative: Annotated[str | None, typer.Option(help="only this initiative")] = None,
) -> None:
    """Delete dead letters for good (all, or those matching the filters)."""
    from services.pipeline.deadletters import purge

    async def body(bus: Bus) -> int:
        return await purge(bus, reason=reason, initiative=initiative)

    n = run(body)
    typer.echo(f"purged {n} dead letter{'s' if n != 1 else ''}")


# ------------------------------------------------------------------------------- log


def delivery_log(
    event_id: Annotated[str, typer.Argument(metavar="EVENT_ID", help="the id `post` printed")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show where each delivery of an event stands: queued, retrying, sent or dead."""
    from services.pipeline.deliverylog import EventLog, event_log, render

    async def body(bus: Bus) -> EventLog:
        return await event_log(bus, event_id)

    log = run(body)
    if as_json:
        typer.echo(json.dumps({**asdict(log), "not_attempted": log.not_attempted}, indent=2))
        return
    for line in render(log):
        typer.echo(line)


# ---------------------------------------------------------------------- webhook-secret


@webhook_secret_app.command("show")
def webhook_secret_show(recipient: Annotated[str, typer.Argument(metavar="RECIPIENT")]) -> None:
    """Print the recipient's webhook secrets (creating the first if there is none)."""
    from notifiers.webhook_secrets import TargetSecrets
    from services.bus.webhook_secrets import show_secrets

    async def body(bus: Bus) -> tuple[TargetSecrets, bool]:
        return await show_secrets(bus, recipient)

    entry, created = run(body)
    for i, s in enumerate(entry.secrets):
        role = "signing" if i == 0 else f"old, valid until {s.expires_at:%Y-%m-%d %H:%M} UTC"
        typer.echo(f"{s.secret}  {role}")
    if created:
        typer.echo(f"created a secret for {recipient}'s webhook: give it to the receiver", err=True)


@webhook_secret_app.command("rotate")
def webhook_secret_rotate(
    recipient: Annotated[str, typer.Argument(metavar="RECIPIENT")],
    grace_hours: Annotated[
        float | None,
        typer.Option(help="hours the old secret stays valid (default 24)"),
    ] = None,
) -> None:
    """Give the recipient's webhook a new secret; the old one stays valid for a while."""
    from notifiers.webhook_secrets import TargetSecrets
    from services.bus.webhook_secrets import rotate_secret

    grace = None if grace_hours is None else timedelta(hours=grace_hours)

    async def body(bus: Bus) -> TargetSecrets:
        return await rotate_secret(bus, recipient, grace)

    entry = run(body)
    typer.echo(entry.secrets[0].secret)
    for old in entry.secrets[1:]:
        if old.expires_at is not None:
            typer.echo(
                f"the old secret is still sent (and valid) until {old.expires_at:%Y-%m-%d %H:%M} "
                "UTC: update the receiver before then",
                err=True,
            )
            break


# ----------------------------------------------------------------------------- status


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
