"""``rewardpilot server url`` and ``server cli``: reaching the embedded server with redis-cli.

Every server here runs under the test's ``tmp_path`` and is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import redis

from conftest import run_cli
from rewardpilot.embedded import read_state, stop_server
from test_server_restart import env  # noqa: F401 (a fixture, on this module's home)

REAL_CLIENT = shutil.which("valkey-cli") or shutil.which("redis-cli")
needs_client = pytest.mark.skipif(REAL_CLIENT is None, reason="neither valkey-cli nor redis-cli is on PATH")

# Stands in for valkey-cli: writes its arguments and REDISCLI_AUTH to the file named by RECORD_TO.
FAKE_CLIENT = """#!/bin/sh
printf '%s\\n' "$@" > "$RECORD_TO.args"
printf '%s' "${REDISCLI_AUTH-unset}" > "$RECORD_TO.auth"
exit 7
"""


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    yield path
    stop_server(path)




def test_url_masks_password(home, env):
    completed = run_cli(["server", "url"], env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    state = read_state(home)
    assert completed.stdout == f"redis://default:***@127.0.0.1:{state.port}/0\n"
    assert state.password not in completed.stdout + completed.stderr


def test_url_show_password_connects(home, env):
    completed = run_cli(["server", "url", "--show-password"], env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    url = completed.stdout.strip()
    assert url == f"redis://default:{read_state(home).password}@127.0.0.1:{read_state(home).port}/0"
    client = redis.Redis.from_url(url)
    try:
        assert client.ping()
    finally:
        client.close()


@needs_client
def test_url_accepted_by_redis_cli(env):
    """redis-cli 7.0.15 sends an empty user name for redis://:PASSWORD@..., which the server rejects."""
    url = run_cli(["server", "url", "--show-password"], env).stdout.strip()

    completed = subprocess.run([REAL_CLIENT, "-u", url, "ping"], capture_output=True, text=True, timeout=30)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "PONG"


def test_url_warns_when_redis_url_set(env):
    # The URL is never connected to: `server url` reads the embedded server only.
    completed = run_cli(["server", "url"], {**env, "REDIS_URL": "redis://127.0.0.1:1/0"})

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith("redis://default:***@127.0.0.1:")
    assert "warning: REDIS_URL is set, so rewardpilot commands use that server" in completed.stderr


def test_status_shows_masked_url(home, env):
    assert run_cli(["server", "url"], env).returncode == 0

    status = json.loads(run_cli(["server", "status", "--json"], env).stdout)
    text = run_cli(["server", "status"], env).stdout

    state = read_state(home)
    assert status["url"] == f"redis://default:***@127.0.0.1:{state.port}/0"
    assert f"redis://default:***@127.0.0.1:{state.port}/0" in text
    assert "server cli" in text
    assert state.password not in text


def test_cli_passes_password_in_env(home, env, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "valkey-cli"
    fake.write_text(FAKE_CLIENT)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "record"
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "RECORD_TO": str(record)}

    completed = run_cli(["server", "cli", "--scan", "--pattern", "rp:done:r1:*"], env)

    state = read_state(home)
    assert completed.returncode == 7, completed.stderr[-2000:]
    arguments = Path(f"{record}.args").read_text().splitlines()
    assert arguments == ["-h", "127.0.0.1", "-p", str(state.port), "--scan", "--pattern", "rp:done:r1:*"]
    assert Path(f"{record}.auth").read_text() == state.password


@needs_client
def test_cli_runs_commands_on_server(home, env):
    written = run_cli(["server", "cli", "set", "cli-check", "kept"], env)

    assert written.returncode == 0, written.stderr[-2000:]
    state = read_state(home)
    client = redis.Redis(host="127.0.0.1", port=state.port, password=state.password, decode_responses=True)
    try:
        assert client.get("cli-check") == "kept"
    finally:
        client.close()
    read_back = run_cli(["server", "cli", "get", "cli-check"], env)
    assert read_back.stdout.strip() == "kept"


def test_cli_rejects_redis_url(home, env):
    completed = run_cli(["server", "cli", "ping"], {**env, "REDIS_URL": "redis://:s3cret@127.0.0.1:1/0"})

    assert completed.returncode == 2
    assert "REDIS_URL is set (redis://:***@127.0.0.1:1/0)" in completed.stderr
    assert 'redis-cli -u "$REDIS_URL"' in completed.stderr
    assert "s3cret" not in completed.stderr
    assert read_state(home) is None


def test_cli_without_client_explains(home, env, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()

    completed = run_cli(["server", "cli", "ping"], {**env, "PATH": str(empty)})

    assert completed.returncode == 2
    assert "neither valkey-cli nor redis-cli is on PATH" in completed.stderr
    assert "apt-get install redis-tools" in completed.stderr

