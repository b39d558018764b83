"""``impactbus subscribe``, ``unsubscribe`` and ``subscriptions``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.cli.base import Mode, Via, run
from services.cli.words import SUBSCRIBE_FLAGS


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


def unsubscribe(sub_id: Annotated[str, typer.Argument(metavar="SUBSCRIPTION_ID")]) -> None:
    """Remove one subscription (ids: `impactbus subscriptions`)."""
    from services.directory.records import Directory

    async def body(bus: Any) -> Any:
        return await (await Directory.open(bus)).unsubscribe(sub_id)

    s = run(body)
    typer.echo(f"unsubscribed {s.recipient} from {s.pattern} via {s.channel}")


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
