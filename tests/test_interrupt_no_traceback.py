"""A stop signal during publishing ends the command without a traceback and removes the temporary id database.

``run`` publishes on a worker thread, and a file of more than
``SPILL_AFTER`` rows moves its transaction_ids to SQLite there. A reader left
unfinished by the stop can be closed later by the garbage collector on the
main thread. Unless the index allows that, sqlite3 raises ProgrammingError
there and Python prints "Exception ignored in: <generator object ...>".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import redis

from conftest import ROOT, one_server
from producer.duplicates import DuplicateIndex

BIG_ROWS = 200_000


def spilled_index() -> DuplicateIndex:
    index = DuplicateIndex(spill_after=3, first_filter_capacity=8)
    for line, transaction_id in enumerate(["a", "b", "c", "d", "e"], start=2):
        assert index.add(transaction_id, line) is None
    return index


def test_index_closes_on_other_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    created: list[DuplicateIndex] = []
    worker = threading.Thread(target=lambda: created.append(spilled_index()))
    worker.start()
    worker.join()
    index = created[0]
    assert list(tmp_path.glob("rewardpilot-ids-*")), "the index did not spill to SQLite"

    index.close()

    assert not list(tmp_path.glob("rewardpilot-ids-*"))


def test_index_reads_on_other_thread():
    created: list[DuplicateIndex] = []
    worker = threading.Thread(target=lambda: created.append(spilled_index()))
    worker.start()
    worker.join()
    index = created[0]
    try:
        # "a" moved to SQLite on the worker thread; this lookup reads it on the main thread.
        assert index.add("a", 99) == 2
        assert index.add("z", 100) is None
    finally:
        index.close()


def test_index_close_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    index = spilled_index()

    index.close()
    index.close()

    assert not list(tmp_path.glob("rewardpilot-ids-*"))


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """Write a CSV file of BIG_ROWS rows once per worker process, for both tests of this module, and return its path."""
    path = tmp_path_factory.mktemp("big") / "big.csv"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_example_data.py"), "--rows", str(BIG_ROWS), "--output", str(path)],
        check=True, capture_output=True, timeout=300,
    )
    return path


def group_lag(client: redis.Redis, stream: str) -> int:
    """Return the lag of the first consumer group of ``stream``, or 0 before it has one."""
    groups = client.xinfo_groups(stream) if client.exists(stream) else []
    return int(groups[0].get("lag") or 0) if groups else 0


def entries_added(client: redis.Redis, stream: str) -> int:
    return client.xinfo_stream(stream)["entries-added"] if client.exists(stream) else 0


def interrupt_when(args: list[str], env: dict[str, str], url: str, ready) -> tuple[int, str]:
    """Start the CLI, send SIGINT once ``ready(client)`` is true, and return the exit status and stderr."""
    client = redis.Redis.from_url(url)
    child = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", *args], env=env, cwd=Path(env["RP_HOME"]).parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not ready(client):
            assert child.poll() is None, child.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the command did not get there in time"
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=180)
    finally:
        child.kill()
        client.close()
    return child.returncode, stderr


@pytest.mark.slow
@one_server
def test_run_sigint_no_traceback(cli_env, keys, redis_url, tmp_path, big_file):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**cli_env, "TMPDIR": str(temporary)}
    transactions = keys.prefix + "job:halted:transactions"

    def waiting_for_consumers(client: redis.Redis) -> bool:
        # Above the producer's default backlog limit of 100,000 entries, the publishing thread waits for
        # the consumers with a chunk in flight, and the stop ends that wait. The ids have spilled to
        # SQLite by then (SPILL_AFTER is 50,000). Consumers that keep the lag lower get the signal at
        # 150,000 entries, still while publishing.
        return group_lag(client, transactions) > 100_000 or entries_added(client, transactions) >= 150_000

    status, stderr = interrupt_when(["--prefix", keys.prefix, "run", str(big_file), "--job", "halted"],
                                    env, redis_url, waiting_for_consumers)

    assert status == 130, stderr[-3000:]
    assert "interrupted by SIGINT while publishing" in stderr
    assert "Exception ignored" not in stderr
    assert "Traceback" not in stderr
    assert "ProgrammingError" not in stderr
    assert not list(temporary.iterdir())


@pytest.mark.slow
@one_server
def test_publish_sigint_no_traceback(cli_env, keys, redis_url, tmp_path, big_file):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**cli_env, "TMPDIR": str(temporary)}

    status, stderr = interrupt_when(["--prefix", keys.prefix, "publish", str(big_file)], env, redis_url,
                                    lambda client: entries_added(client, keys.transactions) >= 60_000)

    assert status == 130, stderr[-3000:]
    assert "interrupted by SIGINT" in stderr
    assert "Exception ignored" not in stderr
    assert "Traceback" not in stderr
    assert not list(temporary.iterdir())
