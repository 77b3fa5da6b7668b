"""The lease renewal of ``RunLock`` through Redis errors, a server restart, a stall and another holder.

Each test starts its own valkey-server, because the tests stop it or take the lock away.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
import redis.asyncio as aioredis
import structlog.testing

from conftest import ROOT, ValkeyProcess
from rewardpilot.cli.consume_cmd import NAME_LEASE_MS, name_lease_key
from rewardpilot.run_lock import RunLock
from rewardpilot.streams import LIVE_GROUP, StreamKeys

LEASE_MS = 600  # renewed every 0.2 s
POLL_SECONDS = 0.1
POLL_ROUNDS = 300  # bounds every wait at about 30 s


@pytest.fixture
def server(tmp_path):
    valkey = ValkeyProcess(tmp_path / "valkey")
    valkey.start()
    yield valkey
    valkey.stop()


async def wait_for(condition) -> bool:
    for _ in range(POLL_ROUNDS):
        if await condition():
            return True
        await asyncio.sleep(POLL_SECONDS)
    return False


def events(logs, text: str) -> list[dict]:
    return [entry for entry in logs if text in entry["event"]]


async def test_lock_taken_again_after_restart(server):
    client = aioredis.Redis.from_url(server.url, socket_timeout=2.0, socket_connect_timeout=1.0)
    key = "lock:restart"
    try:
        with structlog.testing.capture_logs() as logs:
            async with RunLock(client, key, lease_ms=LEASE_MS) as lock:
                server.stop()
                await asyncio.sleep(LEASE_MS / 1000)  # a few renewals fail while the server is down
                server.start()  # same port, and no data: the key is gone
                retaken = await wait_for(lambda: client.exists(key))
                value = await client.get(key)
                renewer_running = not lock._renewer.done()

        assert retaken
        assert json.loads(value)["holder"] == lock.holder
        assert renewer_running
        failed = events(logs, "lock not renewed: Redis command failed")
        assert failed, logs
        assert failed[0]["log_level"] == "warning"
        assert failed[0]["key"] == key
        assert failed[0]["error"]
        assert events(logs, "lock taken again"), logs
        assert await client.exists(key) == 0  # released on leaving
    finally:
        await client.aclose()


async def test_lock_held_elsewhere_reported(server):
    client = aioredis.Redis.from_url(server.url)
    key = "lock:conflict"
    other = json.dumps({"holder": "other-host-7", "since": "2026-12-05T00:00:00Z"})
    conflicts = []
    try:
        with structlog.testing.capture_logs() as logs:
            async with RunLock(client, key, lease_ms=LEASE_MS, on_conflict=conflicts.append) as lock:
                await client.set(key, other, px=60_000)  # what a second holder does after the lease ran out
                for _ in range(POLL_ROUNDS):
                    if events(logs, "lock held by another"):
                        break
                    await asyncio.sleep(POLL_SECONDS)
                await asyncio.sleep(LEASE_MS / 1000)  # two or three more renewals

        assert len(conflicts) == 1
        assert conflicts[0].holder == "other-host-7"
        assert lock.conflict is conflicts[0]
        errors = events(logs, "lock held by another process")
        assert len(errors) >= 2  # one per renewal, for as long as the other holder has it
        assert errors[0]["log_level"] == "error"
        assert errors[0]["holder"] == lock.holder
        assert errors[0]["other_holder"] == "other-host-7"
        assert await client.get(key) == other.encode()  # neither overwritten nor released
    finally:
        await client.aclose()


async def test_release_with_server_down_warns(server):
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=1.0)
    try:
        with structlog.testing.capture_logs() as logs:
            async with RunLock(client, "lock:down", lease_ms=60_000):
                server.stop()
    finally:
        await client.aclose()

    warnings = events(logs, "lock not released")
    assert len(warnings) == 1
    assert warnings[0]["lease_ms"] == 60_000


def start_consumer(url: str, keys: StreamKeys, name: str, log_path) -> subprocess.Popen:
    env = dict(os.environ, REDIS_URL=url, PYTHONPATH=str(ROOT), RP_HOME=str(log_path.parent / "home"))
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "consume", "--name", name,
             "--block-ms", "100"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
        )


def poll(condition) -> bool:
    for _ in range(POLL_ROUNDS):
        if condition():
            return True
        time.sleep(POLL_SECONDS)
    return False


def lease_holder(client: redis.Redis, key: str) -> str | None:
    value = client.get(key)
    return json.loads(value)["holder"] if value else None


def run_out_lease(client: redis.Redis, key: str) -> None:
    """Check that the lease of a stopped consumer expires within NAME_LEASE_MS, then make it expire now.

    The stopped process renews nothing, so only the time left decides when
    the lease runs out. Shortening it saves the test up to 15 s of waiting.
    """
    remaining = client.pttl(key)
    assert 0 < remaining <= NAME_LEASE_MS, remaining
    client.pexpire(key, 100)
    assert poll(lambda: not client.exists(key)), "the lease of the stopped consumer never ran out"


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGCONT)
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=10)


def test_stalled_consumer_takes_name_again(server, tmp_path):
    keys = StreamKeys(prefix="stall:")
    key = name_lease_key(keys, LIVE_GROUP, "c3")
    client = redis.Redis.from_url(server.url)
    log_path = tmp_path / "c3.log"
    first = start_consumer(server.url, keys, "c3", log_path)
    try:
        assert poll(lambda: client.exists(key) or first.poll() is not None)
        assert first.poll() is None, log_path.read_text()[-3000:]
        holder = lease_holder(client, key)

        first.send_signal(signal.SIGSTOP)
        run_out_lease(client, key)
        first.send_signal(signal.SIGCONT)
        assert poll(lambda: client.exists(key)), "the consumer never took its name again"

        second = subprocess.run(
            [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "consume", "--name", "c3",
             "--drain", "--block-ms", "100"],
            env=dict(os.environ, REDIS_URL=server.url, PYTHONPATH=str(ROOT), RP_HOME=str(tmp_path / "home")),
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    finally:
        code = stop(first)
        client.close()

    log = log_path.read_text()
    taken_again = [json.loads(line) for line in log.splitlines() if "lock taken again" in line]
    assert len(taken_again) == 1, log[-3000:]
    assert taken_again[0]["holder"] == holder
    assert taken_again[0]["level"] == "warning"
    assert second.returncode == 2, second.stderr[-3000:]
    assert "a consumer with this name is already running" in " ".join(second.stderr.split())
    assert code == 0, log[-3000:]


def test_stalled_consumer_reports_new_holder(server, tmp_path):
    keys = StreamKeys(prefix="stall-taken:")
    key = name_lease_key(keys, LIVE_GROUP, "c3")
    client = redis.Redis.from_url(server.url)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_consumer(server.url, keys, "c3", first_log)
    second = None
    try:
        assert poll(lambda: client.exists(key) or first.poll() is not None)
        first_holder = lease_holder(client, key)

        first.send_signal(signal.SIGSTOP)
        run_out_lease(client, key)
        second = start_consumer(server.url, keys, "c3", second_log)
        assert poll(lambda: lease_holder(client, key) not in (None, first_holder) or second.poll() is not None)
        second_holder = lease_holder(client, key)
        first.send_signal(signal.SIGCONT)
        # The first consumer stops by itself, and the one that took the name keeps running.
        assert poll(lambda: first.poll() is not None), first_log.read_text()[-3000:]
        assert second.poll() is None, second_log.read_text()[-3000:]
    finally:
        first_code = stop(first)
        if second is not None:
            stop(second)
        client.close()

    assert first_code == 1, first_log.read_text()[-3000:]
    assert "stopped because another process" in first_log.read_text()
    lines = [json.loads(line) for line in first_log.read_text().splitlines() if "lock held by another" in line]
    assert lines, first_log.read_text()[-3000:]
    assert lines[0]["level"] == "error"
    assert lines[0]["holder"] == first_holder
    assert lines[0]["other_holder"] == second_holder
    assert second_holder not in (None, first_holder)
