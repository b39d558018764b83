"""``impactbus digest preview|send-now``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from services.cli.base import locate, run

if TYPE_CHECKING:
    from notifiers.base import LinkMaker


digest_app = typer.Typer(help="Preview or send a recipient's digest now.", no_args_is_help=True)


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
