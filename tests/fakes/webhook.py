"""A local webhook receiver: a threaded HTTP server on a free 127.0.0.1 port.

It records every request (method, path, headers, body) and every TCP connection it
accepts, and answers 200 unless told otherwise::

    sink.respond_next(500, times=2)           # the next two requests get a 500
    sink.respond_next(429, headers={"Retry-After": "7"})
    sink.respond_next(200, delay=1.0)         # answer after a second (client timeouts)
    sink.respond_next(301, headers={"Location": other.url})
    sink.wait_for(3, timeout=5)               # block until three requests arrived

``connections`` counts accepted connections, so a test can prove that a refused URL
never reached the listener.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.fakes.recording import wait_records


@dataclass(frozen=True)
class ReceivedRequest:
    """One request the sink received; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class _Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
    server: _Server

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        received = ReceivedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        response = self.server.sink._record(received)
        if response.delay and self.server.sink._stopping.wait(response.delay):
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests assert on recorded requests instead


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # with block_on_close, server_close() joins the handlers
    block_on_close = True

    def __init__(self, sink: WebhookSink) -> None:
        self.sink = sink
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.sink._connected(request)
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (timeout tests) is expected, not an error


class WebhookSink:
    """The receiving end of webhooks in tests (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._requests: list[ReceivedRequest] = []
        self._script: list[_Response] = []
        self._sockets: list[socket.socket] = []
        self._connections = 0
        self._server = _Server(self)
        self.host, self.port = self._server.server_address[:2]
        # A short poll interval: shutdown() waits up to one interval for the loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The sink's base URL, ``http://127.0.0.1:<port>/``."""
        return f"http://127.0.0.1:{self.port}/"

    def url_for(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        """A URL on the sink's port, optionally spelling the host differently."""
        return f"http://{host}:{self.port}{path}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """The requests received so far."""
        with self._cond:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """How many TCP connections the sink accepted."""
        with self._cond:
            return self._connections

    def respond_next(
        self,
        status: int = 500,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (after ``delay`` seconds)."""
        with self._cond:
            self._script.extend([_Response(status, dict(headers or {}), body, delay)] * times)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least ``n`` requests arrived; return them.

        Raises:
            TimeoutError: fewer than ``n`` arrived within ``timeout`` seconds.
        """
        return wait_records(self._cond, self._requests, n, timeout, "requests")

    def close(self) -> None:
        """Stop serving, hang up open connections and wait for the handler threads."""
        self._stopping.set()
        self._server.shutdown()
        self._thread.join()
        with self._cond:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()

    def _connected(self, sock: socket.socket) -> None:
        with self._cond:
            self._connections += 1
            self._sockets.append(sock)
            self._cond.notify_all()

    def _record(self, received: ReceivedRequest) -> _Response:
        with self._cond:
            self._requests.append(received)
            self._cond.notify_all()
            return self._script.pop(0) if self._script else _Response(200)


@pytest.fixture
def webhook_sink_factory() -> Iterator[Callable[[], WebhookSink]]:
    """Start webhook sinks on free ports; all are closed after the test."""
    sinks: list[WebhookSink] = []

    def start() -> WebhookSink:
        sink = WebhookSink()
        sinks.append(sink)
        return sink

    yield start
    for sink in sinks:
        sink.close()


@pytest.fixture
def webhook_sink(webhook_sink_factory: Callable[[], WebhookSink]) -> WebhookSink:
    """A running webhook sink for one test."""
    return webhook_sink_factory()
