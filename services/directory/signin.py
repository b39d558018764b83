"""The sign-in token ``impactbus up`` prints for the local hub's web pages.

On the embedded default the hub creates an admin token on each start and prints it once,
in the banner on the terminal (never through logging, so never into a log file); the
token of the previous start is revoked. Why each start and not once: the secret then
lives only in the terminal that started the hub (the data dir keeps just the token's id,
to revoke it next time), so no file holds a standing admin credential, and a token seen
in an old scrollback stops working when the hub restarts. Signing in again after a
restart is the price.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Final

from schemas.errors import NotFoundError
from services.bus import Bus
from services.directory.auth import create_token, revoke_token

ID_FILE: Final = "signin_token_id"
LABEL: Final = "local sign-in (impactbus up)"


async def local_signin_token(bus: Bus, data_dir: Path) -> str:
    """A new admin token for this start of the local hub; the last start's is revoked.

    Args:
        bus: the hub's connected bus.
        data_dir: the hub's data dir, where the token's id (not its secret) is kept.

    Returns:
        The full token, to print once.
    """
    previous = _read_id(data_dir)
    if previous:
        with contextlib.suppress(NotFoundError):
            await revoke_token(bus, previous)
    token_id, token = await create_token(bus, "admin", [], label=LABEL)
    _write_id(data_dir, token_id)
    return token


def _read_id(data_dir: Path) -> str:
    try:
        return (data_dir / ID_FILE).read_text().strip()
    except OSError:
        return ""


def _write_id(data_dir: Path, token_id: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / ID_FILE).write_text(token_id + "\n")
