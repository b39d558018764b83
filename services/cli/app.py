"""The ``impactbus`` command line: the app, assembled from one module per command group.

The command modules import only :mod:`services.cli.base` (and :mod:`services.cli.words`),
never this module or each other; here they are registered in the order ``--help`` lists
them.
"""

from __future__ import annotations

import sys

import typer

from services.cli.admin import schema, tokens_app
from services.cli.digest import digest_app
from services.cli.hub import demo, run_service, up
from services.cli.ops import dead_app, delivery_log, status, webhook_secret_app
from services.cli.outbox import outbox_app
from services.cli.post import post, tail
from services.cli.recipients import recipients_app
from services.cli.subscriptions import subscribe, subscriptions, unsubscribe

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
app.add_typer(recipients_app, name="recipients")
app.add_typer(digest_app, name="digest")
app.add_typer(tokens_app, name="tokens")
app.command()(schema)
app.add_typer(dead_app, name="dead")
app.add_typer(webhook_secret_app, name="webhook-secret")
app.command("log")(delivery_log)
app.command()(up)
app.command("run")(run_service)
app.command()(subscribe)
app.command()(unsubscribe)
app.command()(subscriptions)
app.command()(post)
app.command()(tail)
app.command()(status)
app.add_typer(outbox_app, name="outbox")
app.command()(demo)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
