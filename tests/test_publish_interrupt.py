"""Stopping `publish` and `run` while they publish: at a chunk boundary, with counts and a way to finish.

The command-line tests run the CLI as a subprocess and signal it once it has
published. Each input makes the signal land while publishing is still under
way: a file longer than the producer's backlog limit, which no consumer
reads, or a named pipe that the test keeps writing to. Every wait is
bounded. The command-line tests run on one server, and the tests of
``publish_file`` and the producer on each.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from conftest import ROOT, one_server, run_cli
from producer import FileSummary, Producer, Row, publish_file, read_transactions, wait_for_backlog
from producer.publisher import DEFAULT_MAX_BACKLOG, PublishStopped
from rewardpilot.cli.publish_cmd import duration_text, resume_text, stop_on_signals
from test_cli_interrupt import COLUMNS, interrupt_when, start_cli, wait_until, write_rows

# One chunk more than the producer publishes before it waits for a consumer
# that never comes (DEFAULT_MAX_BACKLOG plus the chunk that crosses it), so a
# `publish` of this file can never finish on its own.
STALLED_AT = DEFAULT_MAX_BACKLOG + 1_000
LONG_FILE_ROWS = STALLED_AT + 1_500
BAD_LINES = (5, 50, 500)  # file lines whose amount is invalid, all before the stall


def write_long_file(path: Path) -> Path:
    """Write LONG_FILE_ROWS rows, with an invalid amount on each of BAD_LINES."""
    write_rows(path, LONG_FILE_ROWS)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for line in BAD_LINES:
        fields = lines[line - 1].split(",")
        fields[COLUMNS.index("amount_usd")] = "not-a-number"
        lines[line - 1] = ",".join(fields)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def rows_csv(count: int, *, first: int = 0) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for index in range(first, first + count):
        writer.writerow([f"s-{index:06d}", "u1", "Whole Foods", "groceries", "12.25", "5411", "2026-11-01T10:00:00Z"])
    return buffer.getvalue().encode()


class StopAfterFirstChunk(Producer):
    """A producer whose stop event is set as soon as its first chunk is published."""

    def publish_chunk(self, chunk):
        ids = super().publish_chunk(chunk)
        self.stop.set()
        return ids


def test_publish_file_stops_at_chunk(sync_client, keys, tmp_path):
    stop = threading.Event()
    producer = StopAfterFirstChunk(sync_client, keys, chunk_size=100, max_backlog=None, stop=stop)

    summary = publish_file(sync_client, keys, io.BytesIO(rows_csv(1_000)), producer=producer,
                           rejects_path=tmp_path / "r.jsonl", progress=False)

    assert summary.stopped
    assert summary.published == 100
    assert summary.unpublished == 100
    assert summary.rows == 200
    assert summary.stopped_after_line == 101  # line 1 is the header, so the first chunk is lines 2 to 101
    assert sync_client.xlen(keys.transactions) == 100


def test_publish_file_stops_backlog_wait(sync_client, keys, tmp_path):
    stop = threading.Event()
    # The backlog wait starts before the third chunk, because nothing reads the stream.
    producer = Producer(sync_client, keys, chunk_size=100, max_backlog=100, poll_seconds=30,
                        on_wait=lambda message: stop.set(), stop=stop)

    summary = publish_file(sync_client, keys, io.BytesIO(rows_csv(1_000)), producer=producer,
                           rejects_path=tmp_path / "r.jsonl", progress=False)

    assert summary.stopped
    assert summary.published == 200
    assert summary.unpublished == 200  # the third chunk, stopped while waiting, and the fourth, never sent
    assert summary.stopped_after_line == 201
    assert sync_client.xlen(keys.transactions) == 200


def test_publish_file_without_stop_unchanged(sync_client, keys, tmp_path):
    producer = Producer(sync_client, keys, chunk_size=100, max_backlog=None, stop=threading.Event())

    summary = publish_file(sync_client, keys, io.BytesIO(rows_csv(250)), producer=producer,
                           rejects_path=tmp_path / "r.jsonl", progress=False)

    assert not summary.stopped
    assert summary.published == 250
    assert summary.unpublished == 0
    assert summary.stopped_after_line is None


def test_wait_for_backlog_stop_raises(sync_client, keys):
    for number in range(3):
        sync_client.xadd(keys.transactions, {"data": str(number)})
    stop = threading.Event()
    stop.set()

    with pytest.raises(PublishStopped):
        wait_for_backlog(sync_client, keys.transactions, keys.group(), 1, poll_seconds=30, stop=stop)


def test_publish_chunk_after_stop_raises(sync_client, keys):
    chunk = [outcome.transaction for outcome in read_transactions(io.BytesIO(rows_csv(3)))
             if isinstance(outcome, Row)]
    stop = threading.Event()
    producer = Producer(sync_client, keys, max_backlog=None, stop=stop)
    stop.set()

    with pytest.raises(PublishStopped):
        producer.publish_chunk(chunk)

    assert len(chunk) == 3
    assert not sync_client.exists(keys.transactions)


@pytest.mark.parametrize(("seconds", "text"), [
    (86_400, "24h"), (7 * 86_400, "7d"), (2 * 86_400, "2d"), (36 * 3_600, "36h"), (90, "90s"), (120, "2m"), (0, "0s"),
])
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


def test_resume_text_without_dedup():
    summary = FileSummary(source="big.csv", stopped=True, stopped_after_line=4_001)

    text = resume_text(summary, 0)

    assert "would publish these rows a second time" in text
    assert "after line 4001" in text
    assert "skipped as duplicates" not in text


# Run in a child interpreter, because the second signal ends the process.
TWO_SIGNALS = """
import os, signal, threading
from rewardpilot.cli.publish_cmd import stop_on_signals

stop = threading.Event()
with stop_on_signals(stop) as interruption:
    os.kill(os.getpid(), signal.SIGTERM)
    print(interruption.name, stop.is_set(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    print("still running", flush=True)
"""


def test_stop_on_signals_second_ends():
    completed = subprocess.run([sys.executable, "-c", TWO_SIGNALS], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert completed.returncode == -signal.SIGTERM, completed.stderr[-2000:]
    assert completed.stdout == "SIGTERM True\n"


def test_stop_on_signals_restores_handlers():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    with stop_on_signals(threading.Event()):
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]

    assert {signum: signal.getsignal(signum) for signum in before} == before


@pytest.mark.slow
@one_server
def test_publish_sigint_while_backlog_full(cli_env, keys, redis_url, tmp_path):
    source = write_long_file(tmp_path / "long.csv")
    args = ["--prefix", keys.prefix, "publish", str(source)]

    status, stderr = interrupt_when(args, cli_env, redis_url,
                                    lambda client: client.xlen(keys.transactions) >= STALLED_AT)

    assert status == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert f"interrupted by SIGINT: {STALLED_AT:,} rows published, of " in stderr
    assert "run the same command again to publish the rest" in stderr
    assert "(rows published in the last 24h are skipped as duplicates)" in stderr
    rejects = [json.loads(line) for line in (tmp_path / "long.csv.rejects.jsonl").read_text().splitlines()]
    assert [record["line"] for record in rejects if record["outcome"] == "rejected"] == list(BAD_LINES)

    # With the stream gone but the publish markers kept, a second run finds the
    # backlog empty and publishes only the rows the first one did not.
    client = redis.Redis.from_url(redis_url)
    client.delete(keys.transactions)
    client.close()
    second = run_cli([*args, "--json"], cli_env)

    assert second.returncode == 1, second.stderr[-2000:]  # 1 because of the invalid amounts
    summary = json.loads(second.stdout)
    assert summary["duplicates"] == STALLED_AT
    assert summary["published"] == LONG_FILE_ROWS - len(BAD_LINES) - STALLED_AT
    assert summary["interrupted"] is None


@one_server
def test_publish_sigterm_json_summary(cli_env, keys, redis_url, tmp_path):
    source = write_long_file(tmp_path / "long.csv")
    client = redis.Redis.from_url(redis_url)
    child = start_cli(["--prefix", keys.prefix, "publish", str(source), "--json"], cli_env)
    try:
        wait_until(lambda: client.exists(keys.transactions) and client.xlen(keys.transactions) > 0, child)
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=120)
        in_stream = client.xlen(keys.transactions)
    finally:
        child.kill()
        client.close()

    assert child.returncode == 143, stderr[-2000:]
    summary = json.loads(stdout)
    assert summary["interrupted"] == "SIGTERM"
    assert summary["stopped"] is True
    assert summary["published"] == in_stream
    assert summary["published"] + summary["unpublished"] + summary["rejected"] == summary["rows"]
    assert summary["rows"] < LONG_FILE_ROWS
    assert f"interrupted by SIGTERM: {in_stream:,} rows published, of {summary['rows']:,} read (" in stderr
    assert "Traceback" not in stderr


def feed_pipe(path: Path, done: threading.Event, max_rows: int = 3_000_000) -> None:
    """Write rows to the named pipe until its reader closes it, ``done`` is set or ``max_rows`` are written."""
    try:
        with open(path, "wb") as pipe:
            pipe.write(rows_csv(0))
            written = 0
            while written < max_rows and not done.is_set():
                pipe.write(rows_csv(1_000, first=written).split(b"\n", 1)[1])
                written += 1_000
    except BrokenPipeError:
        pass


@one_server
def test_run_sigint_stops_publishing(cli_env, keys, redis_url, tmp_path):
    fifo = tmp_path / "endless.csv"
    os.mkfifo(fifo)
    done = threading.Event()
    writer = threading.Thread(target=feed_pipe, args=(fifo, done), daemon=True)
    writer.start()

    def has_results(client) -> bool:
        names = list(client.scan_iter(match=f"{keys.prefix}job:*:results", count=1000))
        return bool(names) and client.xlen(names[0]) > 0

    try:
        status, stderr = interrupt_when(["--prefix", keys.prefix, "run", str(fifo), "--json"], cli_env, redis_url,
                                        has_results)
    finally:
        done.set()
        writer.join(timeout=60)

    assert status == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    line = next(line for line in stderr.splitlines() if "interrupted by SIGINT" in line)
    found = re.search(r"while publishing: ([\d,]+) rows published, of ([\d,]+) read \(from .*endless\.csv\), "
                      r"and ([\d,]+) transactions processed; run the same command again with --job (\S+) "
                      r"to publish and process the rest \(rows published in the last 30d are skipped as duplicates\)",
                      line)
    assert found, line
    published, read, processed = (int(found.group(number).replace(",", "")) for number in (1, 2, 3))
    assert 0 < processed <= published <= read
    assert read < 3_000_000


@one_server
def test_run_json_counts_unpublished(cli_env, keys, redis_url, tmp_path):
    fifo = tmp_path / "endless.csv"
    os.mkfifo(fifo)
    done = threading.Event()
    writer = threading.Thread(target=feed_pipe, args=(fifo, done), daemon=True)
    writer.start()
    results = keys.prefix + "job:halted:results"
    client = redis.Redis.from_url(redis_url)
    child = start_cli(["--prefix", keys.prefix, "run", str(fifo), "--job", "halted", "--json"], cli_env)
    try:
        wait_until(lambda: client.exists(results) and client.xlen(results) > 0, child)
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=120)
    finally:
        child.kill()
        client.close()
        done.set()
        writer.join(timeout=60)

    assert child.returncode == 130, stderr[-2000:]
    summary = json.loads(stdout)
    assert summary["interrupted"] == "SIGINT"
    assert "unpublished" in summary["input"]
    assert summary["total_transactions"] + summary["input"]["unpublished"] == summary["input"]["rows_read"]
    assert "run the same command again to publish and process the rest" in stderr
    assert "--job halted to publish" not in stderr  # the job id was given, so the same command names it

