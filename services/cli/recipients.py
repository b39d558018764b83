"""``impactbus recipients enable|add|update|list|show|remove``."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from schemas.errors import (
    InvalidInputError,
)
from services.cli.base import fail, run
from services.cli.words import RECIPIENT_FLAGS

if TYPE_CHECKING:
    from services.bus import Bus


recipients_app = typer.Typer(help="Add, list, show and remove recipients.", no_args_is_help=True)


@recipients_app.command("enable")
def recipients_enable(
    recipient_id: Annotated[str, typer.Argument(metavar="ID")],
    channel: Annotated[str, typer.Argument(help="email | slack | webhook")],
) -> None:
    """Turn a channel the hub disabled (after a permanent failure) back on."""
    from services.pipeline.deadletters import enable_channel

    async def body(bus: Bus) -> tuple[Any, bool]:
        return await enable_channel(bus, recipient_id, channel)

    _, changed = run(body)
    if not changed:
        typer.echo(f"{channel} of {recipient_id} was not disabled")
        return
    typer.echo(
        f"enabled {channel} for {recipient_id}: new events are delivered again; resend "
        f"what failed with `impactbus dead replay --all`"
    )


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
