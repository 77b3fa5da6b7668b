"""``consume --name``: a name that a running consumer of the group uses is rejected at start with exit 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import redis

from conftest import ROOT, one_server, run_cli
from rewardpilot.cli.consume_cmd import name_lease_key
from rewardpilot.streams import LIVE_GROUP


def consume(cli_env, keys, *options):
    return run_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", *options], cli_env,
                   timeout=60)


def wait_for_key(client: redis.Redis, key: str, process: subprocess.Popen) -> bool:
    """Poll until ``key`` exists or ``process`` exits, for at most 60 seconds; return whether the key exists."""
    for _ in range(600):
        if client.exists(key):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.1)
    return False


@pytest.fixture
def client(redis_url):
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.mark.slow
@one_server
def test_running_name_rejected(cli_env, keys, client):
    key = name_lease_key(keys, LIVE_GROUP, "c1")
    first = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "consume", "--name", "c1",
         "--block-ms", "100"],
        env=cli_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert wait_for_key(client, key, first), "the first consumer never took its name lease"

        second = consume(cli_env, keys, "--name", "c1")
        other_name = consume(cli_env, keys, "--name", "c2")
    finally:
        first.send_signal(signal.SIGTERM)
        _, first_stderr = first.communicate(timeout=60)

    output = " ".join(second.stderr.split())
    assert second.returncode == 2
    assert "--name 'c1': a consumer with this name is already running in group 'rp-consumers'" in output
    assert "pick another --name, or leave out --name" in output
    assert "Traceback" not in second.stderr
    assert other_name.returncode == 0, other_name.stderr[-3000:]

    assert first.returncode == 0, first_stderr[-3000:]  # without --drain, SIGTERM is a normal stop
    assert client.exists(key) == 0  # a clean stop releases the name

    after_stop = consume(cli_env, keys, "--name", "c1")
    assert after_stop.returncode == 0, after_stop.stderr[-3000:]


@one_server
def test_stale_name_lease_runs_out(cli_env, keys, client):
    key = name_lease_key(keys, LIVE_GROUP, "c3")
    # What a consumer killed with SIGKILL leaves: a lease that no process renews. It lasts a minute,
    # so it is still held when the first consumer below starts, even on a busy machine.
    client.set(key, json.dumps({"holder": "gone-host-1", "since": "2026-12-05T00:00:00Z"}), px=60_000)

    rejected = consume(cli_env, keys, "--name", "c3")
    assert rejected.returncode == 2
    assert "process gone-host-1 since 2026-12-05T00:00:00Z" in " ".join(rejected.stderr.split())

    client.pexpire(key, 100)  # the lease runs out, as it does when its minute has passed
    for _ in range(100):
        if not client.exists(key):
            break
        time.sleep(0.1)
    released = consume(cli_env, keys, "--name", "c3")
    assert released.returncode == 0, released.stderr[-3000:]


@one_server
def test_name_lease_per_group(cli_env, keys, client):
    client.set(name_lease_key(keys, "replay:other", "c4"), "{}", px=60_000)

    completed = consume(cli_env, keys, "--name", "c4")

    assert completed.returncode == 0, completed.stderr[-3000:]
