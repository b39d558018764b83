"""Admin commands: ``impactbus tokens create|list|revoke`` and ``impactbus schema``.

Registered on the main app by :mod:`services.cli.app`::

    app.add_typer(tokens_app, name="tokens")
    app.command()(schema)
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli.base import run

tokens_app = typer.Typer(
    help="Create, list and revoke API tokens (the secret is shown once, at creation).",
    no_args_is_help=True,
)


class RoleChoice(StrEnum):
    """The roles of :mod:`services.directory.auth`."""

    admin = "admin"
    backbone = "backbone"
    system = "system"
    partner = "partner"


@tokens_app.command("create")
def tokens_create(
    role: Annotated[RoleChoice, typer.Option(help="admin | backbone | system | partner")],
    initiative: Annotated[
        list[str] | None, typer.Option(help="initiative the token acts on (repeat); not for admin")
    ] = None,
    recipient: Annotated[str | None, typer.Option(help="partner: its own recipient id")] = None,
    label: Annotated[str | None, typer.Option(help="a note, e.g. 'CRM sync'")] = None,
) -> None:
    """Create a token and print it once: store it now, it cannot be shown again."""
    from services.directory.auth import create_token

    async def body(bus: Any) -> tuple[str, str]:
        return await create_token(bus, role.value, initiative or [], recipient, label)

    token_id, token = run(body)
    typer.echo(token)
    typer.echo(
        f"token {token_id} ({role.value}) created: this is the only time it is shown", err=True
    )


@tokens_app.command("list")
def tokens_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """List tokens (ids and scopes; secrets are never stored)."""
    from services.directory.auth import list_tokens

    async def body(bus: Any) -> Any:
        return await list_tokens(bus)

    rows = run(body)
    if not rows and not as_json:
        typer.echo("no tokens yet: impactbus tokens create --help")
    for r in rows:
        if as_json:
            typer.echo(r.model_dump_json(exclude={"hash"}))
            continue
        scope = ",".join(r.initiatives) or "*"
        state = "revoked" if r.revoked else "active"
        typer.echo(
            f"{r.id}  {r.role:<9} {scope:<30} {r.recipient or '-':<14} {state:<8} "
            f"{r.created_at:%Y-%m-%d}  {r.label or ''}"
        )


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(metavar="TOKEN_ID")]) -> None:
    """Revoke a token: every API process refuses it within a second."""
    from services.directory.auth import revoke_token

    async def body(bus: Any) -> Any:
        return await revoke_token(bus, token_id)

    r = run(body)
    typer.echo(f"revoked token {r.id} ({r.role})")


def schema(
    json_schema: Annotated[bool, typer.Option("--json", help="JSON Schema per event kind")] = False,
    asyncapi: Annotated[bool, typer.Option("--asyncapi", help="the AsyncAPI 3.0 document")] = False,
    out: Annotated[
        Path | None, typer.Option(help="write files into this directory (default: print to stdout)")
    ] = None,
) -> None:
    """Export the event contracts: JSON Schema per kind and/or the AsyncAPI document."""
    from services.bus.asyncapi import asyncapi_document, json_schemas, write

    if not json_schema and not asyncapi:
        json_schema = asyncapi = out is not None
        if not json_schema:
            typer.echo("error: choose --json or --asyncapi (or give --out DIR for both)", err=True)
            raise typer.Exit(2)
    if out is not None:
        for path in write(out, schemas=json_schema, asyncapi=asyncapi):
            typer.echo(str(path))
        return
    if json_schema and asyncapi:
        typer.echo("error: to stdout, choose one of --json and --asyncapi", err=True)
        raise typer.Exit(2)
    doc: Any = json_schemas() if json_schema else asyncapi_document()
    typer.echo(json.dumps(doc, indent=2))
