"""A reverse proxy on 127.0.0.1 that a test can tell to misbehave.

``FaultProxy`` forwards every request to an upstream orchestrator (usually
the real app in a ``UvicornThread``). For each ``POST`` it first calls its
``plan`` for a ``Fault``. A fault replaces the upstream's response (a status
such as 429 or 503, a body that is not JSON, a hang), and ``None`` passes the
request through. ``GET /health`` always passes through, so the consumer's
discovery of the batch endpoint is not part of the scripted failures.

``stop()`` and ``start()`` close and reopen the listening socket on the same
port, which a client sees as connection refused in between.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Fault:
    """What the proxy does to one request in place of a plain pass-through.

    ``status`` set: respond with it, ``headers`` and ``body`` without asking
    the upstream. ``hang_seconds``: wait that long first (or until the proxy
    closes). ``delay_seconds`` with no ``status``: forward, then wait before
    answering, which makes a slow but correct answer.
    """

    status: int | None = None
    body: bytes = b'{"error": {"type": "injected", "message": "injected by the test proxy"}}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    hang_seconds: float = 0.0
    delay_seconds: float = 0.0


Plan = Callable[[int], "Fault | None"]


def first(count: int, fault: Fault | Callable[[], Fault]) -> Plan:
    """Return a plan that applies ``fault`` to the first ``count`` POSTs, then passes through."""
    def plan(index: int) -> Fault | None:
        if index >= count:
            return None
        return fault() if callable(fault) else fault
    return plan


class FaultProxy:
    """A ThreadingHTTPServer forwarding to ``upstream`` with faults from ``plan``."""

    def __init__(self, upstream: str, plan: Plan | None = None, *, port: int = 0):
        target = urlsplit(upstream)
        self.upstream_host = target.hostname
        self.upstream_port = target.port
        self.plan: Plan = plan or (lambda index: None)
        self.port = port
        self.posts = 0
        self.faults = 0
        self.statuses: list[int] = []  # of POSTs, in the order of their responses
        self._lock = threading.Lock()
        self._connections: set = set()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closing.set()
        self.stop()

    def start(self) -> None:
        """Listen on ``port`` (a free one the first time when it is 0)."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and cut every open keep-alive connection, as a stopped server would."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(10)
        self._httpd = None

    def _next_fault(self) -> Fault | None:
        with self._lock:
            index = self.posts
            self.posts += 1
            fault = self.plan(index)
            if fault is not None and (fault.status is not None or fault.hang_seconds):
                self.faults += 1
            return fault

    def _record(self, status: int) -> None:
        with self._lock:
            self.statuses.append(status)

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes):
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            forwarded = {name: value for name, value in headers.items() if name.lower() not in HOP_HEADERS}
            connection.request(method, path, body=body or None, headers=forwarded)
            response = connection.getresponse()
            answer = response.read()
            answer_headers = {name: value for name, value in response.getheaders()
                              if name.lower() not in HOP_HEADERS}
            return response.status, answer_headers, answer
        finally:
            connection.close()

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle(self) -> None:
                with proxy._lock:
                    proxy._connections.add(self.connection)
                try:
                    super().handle()
                finally:
                    with proxy._lock:
                        proxy._connections.discard(self.connection)

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._next_fault() if self.command == "POST" else None

                if fault is not None and fault.hang_seconds:
                    proxy._closing.wait(fault.hang_seconds)
                if fault is not None and fault.status is not None:
                    status, headers, answer = fault.status, dict(fault.headers), fault.body
                else:
                    status, headers, answer = proxy._forward(self.command, self.path, dict(self.headers), body)
                    if fault is not None and fault.delay_seconds:
                        proxy._closing.wait(fault.delay_seconds)

                if self.command == "POST":
                    proxy._record(status)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format, *args) -> None:
                pass

        return Handler


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    """Poll ``condition`` every 20 ms for up to ``seconds``; return whether it became true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
