"""A local HTTP fake of the Slack Web API: ``chat.postMessage`` and ``auth.test``.

The ``slack_fake`` fixture runs a ``ThreadingHTTPServer`` on a free 127.0.0.1 port. It
records every posted message, answers with a ``ts``, and can script the next responses
(``respond_next``: a 429 with ``Retry-After``, a 500, an ``ok: false`` error). With
``per_channel_rate`` set it answers 429 to a channel posted to faster than that rate.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest

from tests.fakes.recording import wait_records


@dataclass(frozen=True)
class PostedMessage:
    """One ``chat.postMessage`` call as the fake received it."""

    channel: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None
    authorization: str | None
    ts: str
    body: dict[str, Any]


@dataclass
class _Scripted:
    status: int
    headers: dict[str, str]
    json: dict[str, Any] | None
    times: int


@dataclass
class SlackFake:
    """The running fake: where it listens and what it has received."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[PostedMessage] = field(default_factory=list)
    requests: int = 0
    per_channel_rate: float | None = None
    """Messages per second allowed per channel (Slack's is about 1); ``None``: no limit."""
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _script: list[_Scripted] = field(default_factory=list)
    _last_post: dict[str, float] = field(default_factory=dict)
    _seq: int = 0

    @property
    def api_url(self) -> str:
        """Base URL for the Slack client, e.g. ``http://127.0.0.1:PORT/api/``."""
        return f"http://{self.host}:{self.port}/api/"

    def respond_next(
        self,
        status: int = 200,
        headers: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` API calls with this response instead of success.

        Without ``json``: ``{"ok": false, "error": "ratelimited"}`` for 429,
        ``{"ok": false, "error": "internal_error"}`` otherwise.
        """
        with self._cond:
            self._script.append(_Scripted(status, dict(headers or {}), json, times))

    def wait_for(self, n: int, timeout: float = 10) -> list[PostedMessage]:
        """Block until ``n`` messages were posted; return them all.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        return wait_records(self._cond, self.messages, n, timeout, "messages")

    async def wait_for_async(self, n: int, timeout: float = 10) -> list[PostedMessage]:
        """:meth:`wait_for` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for, n, timeout)

    # -- called from the server's threads ----------------------------------------------

    def _next_scripted(self) -> tuple[int, dict[str, str], dict[str, Any]] | None:
        with self._cond:
            for item in self._script:
                if item.times > 0:
                    item.times -= 1
                    default = "ratelimited" if item.status == 429 else "internal_error"
                    return item.status, item.headers, item.json or {"ok": False, "error": default}
        return None

    def _handle(
        self,
        method: str,
        body: dict[str, Any],
        authorization: str | None,
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._cond:
            self.requests += 1
        if scripted := self._next_scripted():
            return scripted
        if method == "auth.test":
            return (
                200,
                {},
                {
                    "ok": True,
                    "url": "https://fake.slack.com/",
                    "team": "Fake",
                    "user": "impactbus",
                    "team_id": "T0001",
                    "user_id": "U0001",
                },
            )
        if method != "chat.postMessage":
            return 404, {}, {"ok": False, "error": "unknown_method"}
        channel = str(body.get("channel") or "")
        if not channel:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        with self._cond:
            now = time.monotonic()
            last = self._last_post.get(channel)
            if (
                self.per_channel_rate
                and last is not None
                and (now - last < 1 / self.per_channel_rate)
            ):
                return 429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"}
            self._last_post[channel] = now
            self._seq += 1
            ts = f"1700000000.{self._seq:06d}"
            blocks = body.get("blocks")
            if isinstance(blocks, str):
                blocks = json.loads(blocks)
            self.messages.append(
                PostedMessage(
                    channel=channel,
                    text=body.get("text"),
                    blocks=blocks,
                    thread_ts=body.get("thread_ts"),
                    authorization=authorization,
                    ts=ts,
                    body=body,
                )
            )
            self._cond.notify_all()
        return (
            200,
            {},
            {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "message": {"text": body.get("text"), "ts": ts},
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 overflows under concurrent clients: 1 s SYN retry


def _handler_for(fake: SlackFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like Slack: the client reuses sessions
        # one segment per response: without it delayed ACKs stall each keep-alive request 40 ms
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            ctype = self.headers.get("Content-Type") or ""
            body: dict[str, Any] = (
                json.loads(raw or "{}") if "json" in ctype else dict(parse_qsl(raw))
            )
            method = self.path.rsplit("/", 1)[-1]
            status, headers, payload = fake._handle(method, body, self.headers.get("Authorization"))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


@pytest.fixture
def slack_fake() -> Iterator[SlackFake]:
    """A running Slack Web API fake on a free port; stopped at teardown."""
    fake = SlackFake()
    server = _Server((fake.host, 0), _handler_for(fake))
    fake.port = int(server.server_address[1])
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="slack-fake", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


__all__ = ["PostedMessage", "SlackFake", "slack_fake"]
