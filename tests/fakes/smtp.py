"""An in-process SMTP server (aiosmtpd) that records what it receives.

The ``smtp_sink`` fixture starts aiosmtpd's threaded ``Controller`` on a free 127.0.0.1
port. It parses every message it accepts into an :class:`email.message.EmailMessage`
(with the envelope attached), counts SMTP sessions, and can answer the next RCPT or DATA
commands with a chosen code (``fail_next``) for fault tests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.bus import free_port
from tests.fakes.recording import wait_records

Stage = Literal["RCPT", "DATA"]
_TEXTS = {
    421: "4.3.2 Service not available, closing channel",
    450: "4.2.1 Mailbox busy",
    451: "4.3.0 Try again later",
    452: "4.3.1 Insufficient storage",
    550: "5.1.1 Mailbox unavailable",
    552: "5.3.4 Message too big",
    554: "5.7.1 Transaction failed",
}


class ReceivedMessage(EmailMessage):
    """A received message plus its SMTP envelope."""

    mail_from: str = ""
    rcpt_tos: tuple[str, ...] = ()
    raw: bytes = b""


@dataclass
class _Failure:
    stage: Stage
    code: int
    times: int


@dataclass
class SmtpSink:
    """Where the fixture's server stands, and what it has received."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[ReceivedMessage] = field(default_factory=list)
    connections: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _failures: list[_Failure] = field(default_factory=list)
    _sessions: list[Session] = field(default_factory=list)
    _servers: list[SMTP] = field(default_factory=list)

    def fail_next(self, code: int = 421, times: int = 1, stage: Stage = "RCPT") -> None:
        """Answer the next ``times`` ``stage`` commands with ``code`` (e.g. 421, 550)."""
        with self._cond:
            self._failures.append(_Failure(stage, code, times))

    def drop_connections(self) -> None:
        """Close every open SMTP connection from the server side (idle-timeout, restart)."""
        with self._cond:
            servers, self._servers = list(self._servers), []
        for server in servers:
            if server.transport is not None:
                server.loop.call_soon_threadsafe(server.transport.close)

    def wait_for(self, n: int, timeout: float = 10) -> list[ReceivedMessage]:
        """Block until ``n`` messages have arrived; return them all.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        return wait_records(self._cond, self.messages, n, timeout, "messages")

    async def wait_for_async(self, n: int, timeout: float = 10) -> list[ReceivedMessage]:
        """:meth:`wait_for` without blocking the event loop (senders keep running)."""
        return await asyncio.to_thread(self.wait_for, n, timeout)

    # -- aiosmtpd handler hooks (run in the controller's thread) -----------------------

    def _scripted(self, stage: Stage) -> str | None:
        with self._cond:
            for failure in self._failures:
                if failure.stage == stage and failure.times > 0:
                    failure.times -= 1
                    return f"{failure.code} {_TEXTS.get(failure.code, 'Scripted failure')}"
        return None

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must set it itself
        with self._cond:
            if not any(s is session for s in self._sessions):
                self._sessions.append(session)
                self._servers.append(server)
                self.connections += 1
        return responses

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if failure := self._scripted("RCPT"):
            return failure
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
    ) -> str:
        if failure := self._scripted("DATA"):
            return failure
        raw = envelope.original_content or b""
        msg = BytesParser(ReceivedMessage, policy=policy.default).parsebytes(raw)
        assert isinstance(msg, ReceivedMessage)
        msg.mail_from = envelope.mail_from or ""
        msg.rcpt_tos = tuple(envelope.rcpt_tos)
        msg.raw = raw
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()
        return "250 OK: queued"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A running recording SMTP server on a free port; stopped at teardown."""
    sink = SmtpSink(port=free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
