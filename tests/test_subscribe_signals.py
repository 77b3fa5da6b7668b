"""``rewardpilot subscribe`` stops on the first SIGINT or SIGTERM, also while stdout is a full pipe.

Each test runs the CLI as a real subprocess with stdout on a pipe, and every
wait is bounded.
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
import redis.asyncio as aioredis

from conftest import ROOT, add_with_result, one_server
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.results import subscribe_entries
from rewardpilot.streams import StreamKeys

# More results than a 64 KiB pipe holds (each line is about 1 KB), so the subscriber blocks writing.
MANY = 200
EXIT_WAIT_SECONDS = 20


def add_results(client, keys: StreamKeys, count: int) -> list[str]:
    """Add ``count`` transactions and their results, a minute apart; return the results stream's entry ids."""
    engine = RulesEngine.default()
    for index in range(count):
        transaction = Transaction.model_validate({
            "transaction_id": f"sig-{index}", "user_id": "u1", "merchant": "Corner Cafe", "category": "dining",
            "amount_usd": "12.50", "mcc": "5812", "timestamp": f"2026-03-01T{index // 60:02d}:{index % 60:02d}:00Z",
        })
        add_with_result(client, keys, transaction, ["amex-gold"], engine)
    return [entry_id for entry_id, _ in client.xrange(keys.results())]


def start_subscriber(keys: StreamKeys, env: dict[str, str], *args: str, ignore_sigint: bool = False):
    """Start ``subscribe`` with stdout and stderr on pipes; with ``ignore_sigint``, as a background job of sh starts."""
    def ignore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "subscribe", *args],
        env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=ignore if ignore_sigint else None,
    )


def wait_for_output(process: subprocess.Popen) -> bytes:
    """Return the first bytes the subscriber writes, which it does only after installing its signal handlers."""
    first = os.read(process.stdout.fileno(), 1)
    assert first, process.stderr.read().decode()[-2000:]
    return first


def finish(process: subprocess.Popen) -> tuple[bytes, str, float]:
    """Read the rest of stdout and stderr and wait for the exit; return them with the seconds it took."""
    started = time.monotonic()
    try:
        out, err = process.communicate(timeout=EXIT_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"subscribe did not exit within {EXIT_WAIT_SECONDS} s of the signal")
    return out, err.decode(), time.monotonic() - started


@one_server
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_full_pipe(keys, cli_env, sync_client, signum, status):
    ids = add_results(sync_client, keys, MANY)
    process = start_subscriber(keys, cli_env, "--from-start")
    first = wait_for_output(process)
    time.sleep(2)  # the subscriber fills the pipe and blocks writing
    assert process.poll() is None

    process.send_signal(signum)
    time.sleep(1)
    out, err, _seconds = finish(process)

    lines = (first + out).decode().splitlines(keepends=True)
    assert process.returncode == status, err[-2000:]
    assert 0 < len(lines) < MANY
    assert all(line.endswith("\n") for line in lines)
    printed = [json.loads(line)["result_id"] for line in lines]
    assert printed == ids[:len(printed)]
    assert f"interrupted by {signum.name}; subscribe again with --from {printed[-1]}" in " ".join(err.split())
    assert "Traceback" not in err


@one_server
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_idle_wait(keys, cli_env, sync_client, signum, status):
    [result_id] = add_results(sync_client, keys, 1)
    process = start_subscriber(keys, cli_env, "--from-start")
    first = wait_for_output(process)
    time.sleep(0.5)  # past the first line, into the blocking read

    signalled = time.monotonic()
    process.send_signal(signum)
    out, err, _seconds = finish(process)

    assert process.returncode == status, err[-2000:]
    assert time.monotonic() - signalled < 5
    assert json.loads(first + out)["result_id"] == result_id
    assert f"subscribe again with --from {result_id}" in " ".join(err.split())


@one_server
def test_inherited_ignored_sigint_stops(keys, cli_env, sync_client):
    add_results(sync_client, keys, 1)
    process = start_subscriber(keys, cli_env, "--from-start", ignore_sigint=True)
    wait_for_output(process)

    process.send_signal(signal.SIGINT)
    _out, err, _seconds = finish(process)

    assert process.returncode == 130, err[-2000:]
    assert "interrupted by SIGINT" in err


@one_server
def test_second_signal_ends_at_once(keys, cli_env, sync_client):
    add_results(sync_client, keys, MANY)
    process = start_subscriber(keys, cli_env, "--from-start")
    wait_for_output(process)
    time.sleep(2)  # the subscriber fills the pipe and blocks writing

    process.send_signal(signal.SIGINT)
    time.sleep(1)
    assert process.poll() is None  # the first signal waits for the line being written
    process.send_signal(signal.SIGINT)
    try:
        returncode = process.wait(timeout=EXIT_WAIT_SECONDS)  # stdout is never read
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()

    assert returncode == -signal.SIGINT


def test_help_lists_exit_statuses(cli_env):
    completed = subprocess.run(
        [sys.executable, "-m", "rewardpilot.cli", "subscribe", "--help"],
        env={**cli_env, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}, capture_output=True, text=True, timeout=60,
    )

    help_text = " ".join(completed.stdout.split())
    assert completed.returncode == 0, completed.stderr
    assert "130 on SIGINT (Ctrl-C) and 143 on SIGTERM" in help_text


# The library's stop event


@one_server
async def test_stop_event_ends_generator(redis_url, keys, sync_client):
    add_results(sync_client, keys, 3)
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    stop = asyncio.Event()
    entries = subscribe_entries(client, keys.results(), start="0", block_ms=200, stop=stop)
    received = []
    try:
        async for entry in entries:
            received.append(entry.result_id)
            stop.set()
    finally:
        await entries.aclose()
        await client.aclose()

    assert len(received) == 1


@one_server
async def test_stop_event_ends_idle_wait(redis_url, keys):
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    stop = asyncio.Event()
    entries = subscribe_entries(client, keys.results(), start="0", block_ms=300, stop=stop)
    asyncio.get_running_loop().call_later(0.2, stop.set)
    started = time.monotonic()
    try:
        received = [entry async for entry in entries]
    finally:
        await client.aclose()

    assert received == []
    assert time.monotonic() - started < 3


async def test_stop_must_be_event(redis_url):
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        with pytest.raises(TypeError, match="stop must be an asyncio.Event or None, got bool True"):
            subscribe_entries(client, "rp:results", stop=True)
    finally:
        await client.aclose()
