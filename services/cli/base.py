"""What every command shares: finding the hub, running a body on a bus, errors in one line.

Every command that talks to the hub finds NATS through ``IMPACTBUS_NATS_URL`` or the
running embedded hub (``<data dir>/hub.json``). Bad input prints one clear line and exits
with status 2; an unreachable hub exits with 3; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import typer

from schemas.errors import (
    BusUnavailableError,
    ImpactbusError,
    InvalidFieldsError,
    InvalidInputError,
    NotFoundError,
)
from services.cli.words import FlagMap, explain

if TYPE_CHECKING:
    from services.bus import HubLocation, NatsSettings
    from services.config import HubSettings

T = TypeVar("T")


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


def locate(nats: NatsSettings | None = None) -> tuple[HubLocation, HubSettings]:
    """The hub this command talks to, and the hub settings with its data dir.

    Raises:
        BusUnavailableError: no running hub was found (the message says where it looked).
    """
    from services.bus import NatsSettings, locate_hub
    from services.config import HubSettings

    hub = HubSettings()
    where = locate_hub(
        nats or NatsSettings(), hub.data_dir, explicit="data_dir" in hub.model_fields_set
    )
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
        nats = NatsSettings()  # read once: where the hub is, and how to talk to it
        where, _ = locate(nats)
        # NATS going away mid-command is one line and exit 3, like not finding it at all
        with map_nats_errors():
            bus = await Bus.connect(where.nats_url, nats, name="impactbus-cli", reconnect=False)
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
