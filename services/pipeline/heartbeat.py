"""Keeping a job in progress while it is sent, so JetStream does not hand it out again."""

from __future__ import annotations

import asyncio
import contextlib

from services.bus.streams import Msg


class Heartbeat:
    """Tells JetStream every ``every_s`` that ``msg`` is still being worked on.

    A timer re-armed on the event loop rather than a task per job: a delivery worker
    starts thousands of sends a second and most end long before the first beat.
    """

    __slots__ = ("_every_s", "_handle", "_msg", "_pending")

    def __init__(self, msg: Msg, every_s: float) -> None:
        self._msg, self._every_s = msg, every_s
        self._pending: asyncio.Task[None] | None = None
        self._handle = asyncio.get_running_loop().call_later(every_s, self._beat)

    def _beat(self) -> None:
        self._pending = asyncio.ensure_future(self._send())
        self._handle = asyncio.get_running_loop().call_later(self._every_s, self._beat)

    async def _send(self) -> None:
        with contextlib.suppress(Exception):
            await self._msg.in_progress()

    def cancel(self) -> None:
        self._handle.cancel()
