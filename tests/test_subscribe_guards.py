"""``rewardpilot subscribe``: option checks, the hint for a missing results stream, and a dropped connection."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import ValkeyProcess, add_with_result, invoke_cli, one_server
from rewardpilot import codec
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.streams import StreamKeys

WALLET = ["amex-gold"]


def flat(text: str) -> str:
    return " ".join(text.split())


def purchase(index: int, user: str = "u1") -> Transaction:
    return Transaction.model_validate({
        "transaction_id": f"sub-{index}", "user_id": user, "merchant": "Corner Cafe", "category": "dining",
        "amount_usd": "12.50", "mcc": "5812", "timestamp": f"2026-03-{index + 1:02d}T12:00:00Z",
    })


def add_results(client, keys: StreamKeys, count: int, user: str = "u1") -> list[str]:
    """Add ``count`` transactions and their results; return the results stream's new entry ids."""
    engine = RulesEngine.default()
    before = client.xlen(keys.results())
    for index in range(count):
        add_with_result(client, keys, purchase(before + index, user), WALLET, engine)
    return [entry_id for entry_id, _ in client.xrange(keys.results())][before:]


def subscribe(keys: StreamKeys, env: dict[str, str], *args: str):
    return invoke_cli(["--prefix", keys.prefix, "subscribe", *args], env)


@one_server
@pytest.mark.parametrize("value", ["bogus", "1-2-3", "-5", "12-", "18446744073709551616-0", "$"])
def test_from_invalid_exit_two(keys, cli_env, value):
    completed = subscribe(keys, cli_env, "--from", value, "--idle-timeout", "1")

    message = flat(completed.stderr)
    assert completed.returncode == 2
    assert f"--from {value!r} is not a stream entry id" in message
    assert "<milliseconds>-<sequence>" in message
    assert "Traceback" not in completed.stderr


@one_server
def test_from_id_starts_after_it(keys, cli_env, sync_client):
    ids = add_results(sync_client, keys, 3)

    by_full_id = subscribe(keys, cli_env, "--from", ids[0], "--idle-timeout", "1")
    by_milliseconds = subscribe(keys, cli_env, "--from", "0", "--idle-timeout", "1")

    assert by_full_id.returncode == 0, by_full_id.stderr
    assert [json.loads(line)["transaction_id"] for line in by_full_id.stdout.splitlines()] == ["sub-1", "sub-2"]
    assert by_milliseconds.returncode == 0, by_milliseconds.stderr
    assert len(by_milliseconds.stdout.splitlines()) == 3


@one_server
def test_from_and_from_start_exit_two(keys, cli_env):
    completed = subscribe(keys, cli_env, "--from-start", "--from", "0", "--idle-timeout", "1")

    assert completed.returncode == 2
    assert "--from-start and --from are alternatives" in flat(completed.stderr)


@one_server
@pytest.mark.parametrize("value", ["-1", "-0.5", "nan"])
def test_idle_timeout_negative_exit_two(keys, cli_env, value):
    completed = subscribe(keys, cli_env, "--idle-timeout", value)

    message = flat(completed.stderr)
    assert completed.returncode == 2
    assert "--idle-timeout" in message
    assert "is invalid; give seconds of 0 or more" in message


@one_server
def test_idle_timeout_zero_prints_then_exits(keys, cli_env, sync_client):
    add_results(sync_client, keys, 2)

    completed = subscribe(keys, cli_env, "--from-start", "--idle-timeout", "0")

    assert completed.returncode == 0, completed.stderr
    assert len(completed.stdout.splitlines()) == 2


@one_server
def test_user_filter(keys, cli_env, sync_client):
    add_results(sync_client, keys, 2, user="alice")
    add_results(sync_client, keys, 1, user="bob")

    completed = subscribe(keys, cli_env, "--from-start", "--user", "bob", "--idle-timeout", "1")

    assert completed.returncode == 0, completed.stderr
    assert [json.loads(line)["user_id"] for line in completed.stdout.splitlines()] == ["bob"]


@one_server
def test_missing_run_hint(keys, cli_env, sync_client):
    sync_client.xadd(keys.results("catalog-2026"), {"field": "value"})

    completed = subscribe(keys, cli_env, "--run", "nosuchrun", "--from-start", "--idle-timeout", "1")

    message = flat(completed.stderr)
    assert completed.returncode == 0
    assert completed.stdout == ""
    assert "no results stream for run 'nosuchrun'" in message
    assert keys.results("nosuchrun") in message
    assert "runs with results here: catalog-2026" in message
    assert "replay --run nosuchrun --start T" in message


@one_server
def test_missing_run_hint_counts_more(keys, cli_env, sync_client):
    for index in range(7):
        sync_client.xadd(keys.results(f"run-{index}"), {"field": "value"})

    completed = subscribe(keys, cli_env, "--run", "nosuchrun", "--from-start", "--idle-timeout", "0")

    message = flat(completed.stderr)
    assert completed.returncode == 0
    assert "runs with results here: run-0, run-1, run-2, run-3, run-4, and 2 more" in message


@one_server
def test_missing_live_stream_hint(keys, cli_env):
    completed = subscribe(keys, cli_env, "--idle-timeout", "1")

    message = flat(completed.stderr)
    assert completed.returncode == 0
    assert f"no results stream {keys.results()!r} yet" in message
    assert "consume" in message


@one_server
def test_existing_stream_no_hint(keys, cli_env, sync_client):
    add_results(sync_client, keys, 1)

    completed = subscribe(keys, cli_env, "--idle-timeout", "1")

    assert completed.returncode == 0, completed.stderr
    assert "hint:" not in completed.stderr


@one_server
def test_job_and_run_together(keys, cli_env, sync_client):
    job_keys = StreamKeys(prefix=keys.prefix, job="keeptest")
    engine = RulesEngine.default()
    recommendation = engine.recommend(purchase(0), WALLET)
    sync_client.xadd(job_keys.transactions, codec.encode_transaction(purchase(0)))
    sync_client.xadd(job_keys.results("rerun1"), codec.encode_result(recommendation))

    replayed = subscribe(keys, cli_env, "--job", "keeptest", "--run", "rerun1", "--from-start", "--idle-timeout", "1")
    not_replayed = subscribe(keys, cli_env, "--job", "keeptest", "--run", "rerun2", "--from-start",
                             "--idle-timeout", "1")

    assert replayed.returncode == 0, replayed.stderr
    assert [json.loads(line)["transaction_id"] for line in replayed.stdout.splitlines()] == ["sub-0"]
    assert "hint:" not in replayed.stderr
    assert not_replayed.returncode == 0
    assert "no results stream for run 'rerun2' of job 'keeptest'" in flat(not_replayed.stderr)
    assert "replay --job keeptest --run rerun2" in flat(not_replayed.stderr)


class LineReader:
    """Collect a child process's stdout lines on a thread, so the test can wait for one with a bound."""

    def __init__(self, process: subprocess.Popen):
        self.lines: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(process,), daemon=True)
        self.thread.start()

    def _pump(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.put(line)

    def next(self) -> str:
        return self.lines.get(timeout=60)


def start_subscriber(server: ValkeyProcess, keys: StreamKeys, tmp_path: Path, *args: str) -> subprocess.Popen:
    from conftest import ROOT

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "RP_HOME": str(tmp_path / "home"),
           "REDIS_URL": server.url}
    return subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "subscribe", *args],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def server_client(server: ValkeyProcess):
    import redis

    return redis.Redis.from_url(server.url, decode_responses=True)


def test_server_gone_exit_one(tmp_path):
    server = ValkeyProcess(tmp_path / "valkey", password="s3cret-pass")
    server.start()
    keys = StreamKeys(prefix="rptest:gone:")
    try:
        add_results(server_client(server), keys, 1)
        process = start_subscriber(server, keys, tmp_path, "--from-start", "--reconnect-timeout", "1")
        reader = LineReader(process)
        first = reader.next()
    finally:
        server.stop()
    try:
        process.wait(timeout=60)
    finally:
        process.kill()
    stderr = process.stderr.read()

    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert json.loads(first)["transaction_id"] == "sub-0"
    assert process.returncode == 1
    assert len(errors) == 1
    assert f"redis://:***@127.0.0.1:{server.port}/0" in errors[0]
    assert "could not reconnect within 1 s" in errors[0]
    assert "check that the server is running" in errors[0]
    assert "s3cret-pass" not in stderr
    assert "Traceback" not in stderr


def test_server_back_resumes(tmp_path):
    server = ValkeyProcess(tmp_path / "valkey", appendonly=True)
    server.start()
    keys = StreamKeys(prefix="rptest:back:")
    process = None
    try:
        add_results(server_client(server), keys, 1)
        process = start_subscriber(server, keys, tmp_path, "--from-start", "--idle-timeout", "3",
                                   "--reconnect-timeout", "60")
        reader = LineReader(process)
        first = reader.next()
        server.stop()
        server.start()
        add_results(server_client(server), keys, 1)
        second = reader.next()
        process.wait(timeout=60)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        server.stop()
    stderr = process.stderr.read()

    assert json.loads(first)["transaction_id"] == "sub-0"
    assert json.loads(second)["transaction_id"] == "sub-1"
    assert process.returncode == 0, stderr
    assert "Redis unreachable; reconnecting" in stderr
    assert "reconnected to Redis" in stderr
    assert "Traceback" not in stderr


@one_server
def test_printed_result_id_resumes(keys, cli_env, sync_client):
    add_results(sync_client, keys, 3)

    first = subscribe(keys, cli_env, "--from-start", "--idle-timeout", "0")
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    resumed = subscribe(keys, cli_env, "--from", lines[0]["result_id"], "--idle-timeout", "0")

    assert first.returncode == 0, first.stderr
    assert [line["result_id"] for line in lines] == [entry_id for entry_id, _ in
                                                     sync_client.xrange(keys.results())]
    assert [json.loads(line)["transaction_id"] for line in resumed.stdout.splitlines()] == [
        line["transaction_id"] for line in lines[1:]]


# Entries that are not valid results


def add_invalid(client, keys: StreamKeys, data: str = "{bad") -> str:
    return client.xadd(keys.results(), {"data": data, "user_id": "u1", "transaction_id": "broken"})


@one_server
def test_invalid_entry_skipped_with_warning(keys, cli_env, sync_client):
    add_results(sync_client, keys, 1)
    bad_id = add_invalid(sync_client, keys)
    add_results(sync_client, keys, 1)

    completed = subscribe(keys, cli_env, "--from-start", "--idle-timeout", "0")

    message = flat(completed.stderr)
    assert completed.returncode == 0, completed.stderr
    assert [json.loads(line)["transaction_id"] for line in completed.stdout.splitlines()] == ["sub-0", "sub-2"]
    assert f"warning: skipped results entry {bad_id} of {keys.results()}, which is not a valid result" in message
    assert "Invalid JSON: key must be a string at line 1 column 2" in message
    assert f"--from {bad_id} starts after it" in message
    assert f"skipped 1 results entry of {keys.results()} that is not a valid result ({bad_id})" in message
    assert "Traceback" not in completed.stderr


@one_server
def test_invalid_entries_counted_after_ten(keys, cli_env, sync_client):
    bad_ids = [add_invalid(sync_client, keys) for _ in range(12)]
    add_results(sync_client, keys, 1)

    completed = subscribe(keys, cli_env, "--from-start", "--idle-timeout", "0")

    warnings = [line for line in completed.stderr.splitlines() if line.startswith("warning: skipped results entry")]
    message = flat(completed.stderr)
    assert completed.returncode == 0, completed.stderr
    assert len(completed.stdout.splitlines()) == 1
    assert len(warnings) == 10
    assert "further ones are skipped and counted" in message
    assert f"skipped 12 results entries of {keys.results()} that are not valid results " \
           f"({bad_ids[0]} to {bad_ids[-1]})" in message


@one_server
def test_from_invalid_entry_skips_it(keys, cli_env, sync_client):
    bad_id = add_invalid(sync_client, keys)
    add_results(sync_client, keys, 1)

    completed = subscribe(keys, cli_env, "--from", bad_id, "--idle-timeout", "0")

    assert completed.returncode == 0, completed.stderr
    assert len(completed.stdout.splitlines()) == 1
    assert "warning" not in completed.stderr


# --from with a millisecond alone


@one_server
def test_from_millisecond_after_all(keys, cli_env, sync_client):
    engine = RulesEngine.default()
    for index, entry_id in enumerate(["5000-0", "5000-1", "5000-2", "5001-0"]):
        sync_client.xadd(keys.results(), codec.encode_result(engine.recommend(purchase(index), WALLET)), id=entry_id)

    after_millisecond = subscribe(keys, cli_env, "--from", "5000", "--idle-timeout", "0")
    after_entry = subscribe(keys, cli_env, "--from", "5000-0", "--idle-timeout", "0")

    assert after_millisecond.returncode == 0, after_millisecond.stderr
    assert [json.loads(line)["result_id"] for line in after_millisecond.stdout.splitlines()] == ["5001-0"]
    assert after_entry.returncode == 0, after_entry.stderr
    assert [json.loads(line)["result_id"] for line in after_entry.stdout.splitlines()] == [
        "5000-1", "5000-2", "5001-0"]


# --idle-timeout with --user


@one_server
def test_user_idle_timeout_with_others(keys, cli_env, sync_client):
    """Results of other users, arriving every 0.1 s, do not keep `--user U --idle-timeout 1` running."""
    other_result = codec.encode_result(RulesEngine.default().recommend(purchase(0, user="someone-else"), WALLET))
    stop = threading.Event()
    added = []

    def add_other_users() -> None:
        while not stop.is_set() and len(added) < 600:
            added.append(sync_client.xadd(keys.results(), other_result))
            stop.wait(0.1)

    feeder = threading.Thread(target=add_other_users, daemon=True)
    feeder.start()
    try:
        completed = subscribe(keys, cli_env, "--user", "u1", "--idle-timeout", "1")
        added_before_exit = len(added)
    finally:
        stop.set()
        feeder.join(timeout=60)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == ""
    assert added_before_exit < 600  # an idle time reset by other users' results lasts until the feed stops


# --run checks and hints


@one_server
@pytest.mark.parametrize("value", ["a:b", "-x", "a*", "x" * 65, ""])
def test_run_invalid_exit_two(keys, cli_env, value):
    from rewardpilot.replay import InvalidReplayError, check_run_name

    completed = subscribe(keys, cli_env, "--run", value, "--idle-timeout", "0")

    message = flat(completed.stderr)
    assert completed.returncode == 2
    assert f"run name {value!r} is invalid" in message
    assert "use 1 to 64 letters, digits" in message
    assert "hint:" not in message
    with pytest.raises(InvalidReplayError):
        check_run_name(value)  # replay rejects the same names


@one_server
def test_run_under_job_hint(keys, cli_env, sync_client):
    for job in ("j1", "j2"):
        job_keys = StreamKeys(prefix=keys.prefix, job=job)
        recommendation = RulesEngine.default().recommend(purchase(0), WALLET)
        sync_client.xadd(job_keys.results("jr1"), codec.encode_result(recommendation))

    completed = subscribe(keys, cli_env, "--run", "jr1", "--idle-timeout", "0")

    message = flat(completed.stderr)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == ""
    assert f"no results stream for run 'jr1' outside a job ({keys.results('jr1')})" in message
    assert "but jobs j1, j2 have one: add --job j1 to follow it" in message
