"""``impactbus outbox`` and ``outbox show``: what the dev outbox caught."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from services.cli.base import Via, fail, run

outbox_app = typer.Typer(
    help="What the dev outbox caught (when no SMTP server or Slack token is configured).",
    invoke_without_command=True,
)


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
