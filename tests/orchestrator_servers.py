"""Real servers on 127.0.0.1 for the orchestrator tests: uvicorn in a thread, and a
stdlib HTTP server whose answers a test scripts."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import uvicorn


class UvicornThread:
    """An ASGI app served by uvicorn on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, app):
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "UvicornThread":
        self.thread.start()
        for _ in range(400):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                break
            threading.Event().wait(0.025)
        raise RuntimeError(f"uvicorn on port {self.port} did not start")

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.socket.close()


@dataclass
class Scripted:
    """One scripted answer: status, headers, body, and an optional hang in seconds."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    hang_seconds: float = 0.0


class ScriptedServer:
    """A ThreadingHTTPServer on 127.0.0.1 answering each path with its Scripted answer (404 otherwise)."""

    def __init__(self, answers: dict[str, Scripted]):
        self.answers = answers
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, dict(self.headers), body))
                answer = outer.answers.get(self.path, Scripted(404, b'{"detail": "Not Found"}'))
                if answer.hang_seconds:
                    outer.release.wait(answer.hang_seconds)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
