"""The embedded server after ``rewardpilot server stop``: same port on restart, and a stop that checks for clients.

Every server here runs under the test's ``tmp_path`` and is stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from conftest import ROOT, run_cli
from rewardpilot.embedded import (
    STATE_FILE, ensure_server, is_alive, other_clients, parse_client_name, read_state, stop_server,
)

# Bounds of the polling loops that wait for another process, so each loop stops by itself.
POLL_SECONDS = 0.2
POLL_ROUNDS = 300


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """Return an RP_HOME under tmp_path for this process and the CLI, and stop its server afterwards."""
    path = tmp_path / "home"
    monkeypatch.setenv("RP_HOME", str(path))
    monkeypatch.delenv("REDIS_URL", raising=False)
    yield path
    stop_server(path)


@pytest.fixture
def env(home) -> dict[str, str]:
    """Environment for CLI subprocesses on the embedded server of ``home``, with unwrapped messages."""
    variables = dict(os.environ)
    variables.pop("REDIS_URL", None)
    variables["RP_HOME"] = str(home)
    variables["PYTHONPATH"] = str(ROOT)
    variables["COLUMNS"] = "1000"  # rich wraps at 80 columns when stderr is not a terminal
    return variables


def client_of(state) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=state.port, password=state.password, decode_responses=True)


def test_restart_reuses_recorded_port(home):
    first = ensure_server(home)
    client = client_of(first)
    client.set("restart-check", "kept")
    client.close()

    assert stop_server(home) is True
    assert not is_alive(first)
    assert (home / STATE_FILE).exists()

    second = ensure_server(home)
    assert second.port == first.port
    assert second.password == first.password
    assert second.pid != first.pid
    client = client_of(second)
    assert client.get("restart-check") == "kept"
    client.close()


def test_restart_on_taken_port_warns(home, env):
    first = ensure_server(home)
    assert stop_server(home) is True

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", first.port))
        squatter.listen()
        completed = run_cli(["wallet", "set", "bob", "amex-gold"], env)

    assert completed.returncode == 0, completed.stderr
    second = read_state(home)
    assert second is not None
    assert second.port != first.port
    assert is_alive(second)
    assert f"not on its recorded port {first.port}" in completed.stderr
    assert "another process listens on it" in completed.stderr
    assert "Restart every rewardpilot process that is still running" in completed.stderr


def test_corrupt_state_file_starts_fresh_server(home):
    home.mkdir(parents=True)
    (home / STATE_FILE).write_text("{not json")

    state = ensure_server(home)

    assert is_alive(state)
    assert json.loads((home / STATE_FILE).read_text())["port"] == state.port


def test_stop_rejects_while_clients_connected(home, env):
    from rewardpilot.connection import connect

    state = ensure_server(home)
    named = connect(state.url)  # named rewardpilot:<this pid>, without a command outside the CLI
    named.ping()
    unnamed = client_of(state)
    unnamed.ping()
    try:
        completed = run_cli(["server", "stop"], env)

        assert completed.returncode == 2
        assert is_alive(state)
        assert "2 other clients are connected" in completed.stderr
        assert f"a rewardpilot process with pid {os.getpid()}" in completed.stderr
        assert "1 connection of another program (last command: ping)" in completed.stderr
        assert "server stop --force" in completed.stderr
        assert f"again on port {state.port}" in completed.stderr
    finally:
        named.close()
        unnamed.close()


def test_stop_force_stops_with_client(home, env):
    state = ensure_server(home)
    client = client_of(state)
    client.ping()
    try:
        completed = run_cli(["server", "stop", "--force"], env)
    finally:
        client.close()

    assert completed.returncode == 0, completed.stderr
    assert "embedded Valkey stopped" in completed.stderr
    assert "1 other client was connected" in completed.stderr
    assert f"starts the server again on port {state.port}" in completed.stderr
    assert not is_alive(state)
    assert read_state(home) == state


def test_stop_without_clients_stops(home, env):
    state = ensure_server(home)

    completed = run_cli(["server", "stop"], env)

    assert completed.returncode == 0, completed.stderr
    assert "embedded Valkey stopped" in completed.stderr
    assert "warning" not in completed.stderr
    assert not is_alive(state)


def test_stop_missing_home_creates_nothing(tmp_path, env):
    env["RP_HOME"] = str(tmp_path / "absent")

    completed = run_cli(["server", "stop"], env)

    assert completed.returncode == 0, completed.stderr
    assert "embedded Valkey was not running" in completed.stderr
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize(("name", "expected"), [
    ("rewardpilot:4242:consume", (4242, "consume")),
    ("rewardpilot:4242:wallet.set", (4242, "wallet.set")),
    ("rewardpilot:4242", (4242, None)),
    ("rewardpilot:4242:", (4242, None)),
    ("rewardpilot:pid:consume", (None, None)),
    ("rewardpilot", (None, None)),
    ("other:4242:consume", (None, None)),
    ("", (None, None)),
])
def test_parse_client_name_cases(name, expected):
    assert parse_client_name(name) == expected


def consumer_connections(state, pid: int) -> list:
    return [client for client in other_clients(state) if client.pid == pid and client.command == "consume"]


def wait_for_reading_consumer(state, consumer: subprocess.Popen) -> list:
    """Poll CLIENT LIST until the consumer has a connection whose last command is XREADGROUP."""
    for _ in range(POLL_ROUNDS):
        assert consumer.poll() is None, "the consumer exited early"
        connections = consumer_connections(state, consumer.pid)
        if any(client.last_command == "xreadgroup" for client in connections):
            return connections
        time.sleep(POLL_SECONDS)
    return consumer_connections(state, consumer.pid)


@pytest.mark.slow
def test_consumer_reconnects_after_restart(home, env, tmp_path):
    state = ensure_server(home)
    consumer = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "consume", "--workers", "1", "--block-ms", "200"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for_reading_consumer(state, consumer), "the consumer never read from the stream"

        rejected = run_cli(["server", "stop"], env)
        assert rejected.returncode == 2
        assert f"rewardpilot consume with pid {consumer.pid}" in rejected.stderr

        forced = run_cli(["server", "stop", "--force"], env)
        assert forced.returncode == 0, forced.stderr
        assert not is_alive(state)

        restarted = ensure_server(home)
        assert restarted.port == state.port
        reconnected = wait_for_reading_consumer(restarted, consumer)
        assert reconnected, "the consumer did not reconnect to the restarted server"
        assert consumer.poll() is None
    finally:
        consumer.send_signal(signal.SIGTERM)
        try:
            consumer.wait(30)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait(10)
