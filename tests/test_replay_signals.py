"""A signal stops `rewardpilot replay` at once with its documented status, wherever the replay is.

SIGTERM used to raise an exception from a signal handler, which asyncio's
socket transport could catch during a write and take for a lost
connection, so the replay went on to the end and exited 0.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, invoke_cli, one_server
from rewardpilot.results import read_results
from rewardpilot.streams import StreamKeys

ROWS = 3000  # the whole example, so a replay with small batches runs for a few seconds


def start_replay(keys, cli_env, cwd, run: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "replay", "--job", "sig", "--start", "0",
         "--run", run, "--batch-size", "10"],
        env=cli_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_results(client, stream: str, at_least: int, attempts: int = 600) -> bool:
    for _ in range(attempts):  # at most 60 s
        if client.exists(stream) and client.xlen(stream) >= at_least:
            return True
        time.sleep(0.1)
    return False


@one_server
@pytest.mark.parametrize("signum, status, name", [
    (signal.SIGTERM, 143, "SIGTERM"),
    (signal.SIGINT, 130, "SIGINT"),
])
@pytest.mark.slow
def test_signal_stops_replay_midway(keys, sync_client, cli_env, tmp_path, signum, status, name):
    job = StreamKeys(prefix=keys.prefix, job="sig")
    ran = invoke_cli(["--prefix", keys.prefix, "run", str(ROOT / "examples" / "transactions.csv"), "--job", "sig",
                      "--keep", "1h"], cli_env)
    assert ran.returncode == 0, ran.stderr[-2000:]

    # Several signals at different points of the replay, each on a run of its own.
    for attempt, after_results in enumerate((1, 200, 700)):
        run = f"stop{attempt}"
        process = start_replay(keys, cli_env, tmp_path, run)
        try:
            assert wait_for_results(sync_client, job.results(run), after_results)
            process.send_signal(signum)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=10)

        assert process.returncode == status, stderr[-2000:]
        assert f"replay stopped by {name}" in " ".join(stderr.split())
        assert "Fatal write error" not in stderr
        assert sync_client.xlen(job.results(run)) < ROWS

        # Running the same command again finishes the replay, with one result per transaction.
        finished = invoke_cli(["--prefix", keys.prefix, "replay", "--job", "sig", "--start", "0", "--run", run],
                              cli_env)
        assert finished.returncode == 0, finished.stderr[-2000:]
        ids = [result.transaction_id for result in read_results(sync_client, job.results(run))]
        assert len(ids) == ROWS
        assert len(set(ids)) == ROWS


@one_server
@pytest.mark.parametrize("options, fragment", [
    (["--rate", "abc"], "invalid rate 'abc'"),
    (["--orchestrator", "notaurl"], "orchestrator URL 'notaurl' is invalid"),
])
def test_invalid_call_option_leaves_no_group(keys, sync_client, cli_env, tmp_path, options, fragment):
    ran = invoke_cli(["--prefix", keys.prefix, "run", str(ROOT / "examples" / "transactions.csv"), "--live",
                      "--sample", "0"], cli_env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    groups_before = [group["name"] for group in sync_client.xinfo_groups(keys.transactions)]

    completed = invoke_cli(["--prefix", keys.prefix, "replay", "--start", "0", "--run", "bad-option", *options],
                           cli_env)

    assert completed.returncode == 2, completed.stderr[-2000:]
    assert fragment in completed.stderr
    assert "Traceback" not in completed.stderr
    assert [group["name"] for group in sync_client.xinfo_groups(keys.transactions)] == groups_before


@one_server
def test_killed_job_replay_streams_expire(keys, sync_client, cli_env, tmp_path):
    job = StreamKeys(prefix=keys.prefix, job="sig")
    ran = invoke_cli(["--prefix", keys.prefix, "run", str(ROOT / "examples" / "transactions.csv"), "--job", "sig",
                      "--keep", "1h"], cli_env)
    assert ran.returncode == 0, ran.stderr[-2000:]

    process = start_replay(keys, cli_env, tmp_path, "killed")
    try:
        assert wait_for_results(sync_client, job.results("killed"), 1)
        process.kill()  # SIGKILL: no exit pass gives the job's keys their expiry
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)

    assert 0 < sync_client.ttl(job.results("killed")) <= 3600


@one_server
@pytest.mark.parametrize("signum, status, name", [
    (signal.SIGTERM, 143, "SIGTERM"),
    (signal.SIGINT, 130, "SIGINT"),
])
def test_stopped_replay_prints_json_summary(keys, sync_client, cli_env, tmp_path, signum, status, name):
    published = invoke_cli(["--prefix", keys.prefix, "publish", str(ROOT / "examples" / "transactions.csv")],
                           cli_env)
    assert published.returncode == 0, published.stderr[-2000:]
    process = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "replay", "--start", "0",
         "--run", "halted", "--batch-size", "1", "--json"],
        env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert wait_for_results(sync_client, keys.results("halted"), 100)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)

    assert process.returncode == status, stderr[-2000:]
    assert f"replay stopped by {name} after" in " ".join(stderr.split())
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout[-2000:]
    summary = json.loads(lines[0])
    assert summary["interrupted"] == name
    assert summary["run"] == "halted"
    assert summary["results"] == sync_client.xlen(keys.results("halted"))
    assert 100 <= summary["results"] < ROWS
    assert summary["delivered"] >= summary["results"]


@one_server
def test_finished_replay_json_not_interrupted(keys, sync_client, cli_env):
    published = invoke_cli(["--prefix", keys.prefix, "publish", str(ROOT / "examples" / "transactions.csv")],
                           cli_env)
    assert published.returncode == 0, published.stderr[-2000:]

    completed = invoke_cli(["--prefix", keys.prefix, "replay", "--start", "0", "--run", "whole", "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["interrupted"] is None
    assert summary["results"] == ROWS
