"""The command line under a stop signal, and with user data that looks like Rich markup or emoji codes.

Each run that gets a signal is a subprocess, as a user runs it. A signal is
sent only once the command has installed its handlers, which is known when
its consumer group exists or its job has results. Every wait is bounded by a
deadline. The tests run on one server, because their subject is the command
line: tests of the consumer pool and the producer cover the servers.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis

from conftest import free_port, invoke_cli, one_server, run_cli

COLUMNS = ["transaction_id", "user_id", "merchant", "category", "amount_usd", "mcc", "timestamp"]


def write_rows(path: Path, count: int, *, user: str = "u1") -> Path:
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for index in range(count):
            moment = (start + timedelta(seconds=index)).strftime("%Y-%m-%dT%H:%M:%SZ")
            writer.writerow([f"i-{index:06d}", user, "Whole Foods", "groceries", f"{10 + index % 90}.25", "5411", moment])
    return path


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", *args], env=env, cwd=Path(env["RP_HOME"]).parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_until(condition, child: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert child.poll() is None, child.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the command did not get there in time"
        time.sleep(0.02)


def interrupt_when(args: list[str], env: dict[str, str], redis_url: str, ready) -> tuple[int, str]:
    """Start the CLI with ``args``, send SIGINT once ``ready(client)`` is true, and return its exit status and stderr."""
    client = redis.Redis.from_url(redis_url)
    child = start_cli(args, env)
    try:
        wait_until(lambda: ready(client), child)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=120)
    finally:
        child.kill()
        client.close()
    return child.returncode, stderr


@pytest.mark.slow
@one_server
def test_run_interrupted_exits_130(cli_env, keys, redis_url, tmp_path):
    source = write_rows(tmp_path / "big.csv", 60_000)
    transactions = keys.prefix + "job:halted:transactions"

    def published_all(client) -> bool:
        # The signal comes after publishing, while the pool still drains.
        return bool(client.exists(transactions)) and client.xinfo_stream(transactions)["entries-added"] >= 60_000

    status, stderr = interrupt_when(["--prefix", keys.prefix, "run", str(source), "--job", "halted"], cli_env,
                                    redis_url, published_all)

    assert status == 130, stderr[-2000:]
    assert "interrupted by SIGINT" in stderr
    assert "of 60000 transactions processed" in stderr
    assert "consume --drain --job halted" in stderr


@one_server
def test_drain_interrupted_exits_130(cli_env, keys, redis_url, tmp_path):
    source = write_rows(tmp_path / "few.csv", 5)
    assert run_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env).returncode == 0
    # Nothing listens on this port, so the drain can never finish.
    args = ["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100",
            "--orchestrator", f"http://127.0.0.1:{free_port()}", "--timeout", "1"]

    status, stderr = interrupt_when(args, cli_env, redis_url, lambda client: bool(client.xinfo_groups(keys.transactions)))

    assert status == 130, stderr[-2000:]
    assert "interrupted by SIGINT before the group was drained" in stderr
    assert "not reachable at start" in stderr


@one_server
def test_run_prints_markup_like_ids(cli_env, keys, tmp_path):
    source = write_rows(tmp_path / "markup.csv", 2, user="[/x]")

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source)], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "[/x]" in completed.stdout
    assert "MarkupError" not in completed.stderr


@one_server
def test_status_keeps_emoji_codes_in_prefix(cli_env, keys):
    prefix = keys.prefix + "b:"  # ":b:" is Rich's code for an emoji

    completed = invoke_cli(["--prefix", prefix, "status"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"{prefix}transactions" in completed.stdout + completed.stderr


@one_server
def test_report_unknown_job_exit_two(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "u1", "--month", "2026-11", "--job", "nope"],
                           cli_env)

    assert completed.returncode == 2
    assert "no job 'nope'" in completed.stderr
