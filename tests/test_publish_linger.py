"""``rewardpilot publish -`` on a pipe held open: rows are published as they arrive, not at the end of input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import redis

from tests.conftest import ROOT, run_cli

HEADER = b"transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
WAIT_SECONDS = 20.0  # generous bound for a condition on a loaded machine; no test asserts a duration


def csv_rows(start: int, count: int) -> bytes:
    return b"".join(b"t%d,u1,Shell,gas,12.50,5541,2026-01-02T10:00:00Z\n" % number
                    for number in range(start, start + count))


def json_rows(start: int, count: int) -> bytes:
    return b"".join(
        json.dumps({"transaction_id": f"j{number}", "user_id": "u1", "merchant": "Shell", "category": "gas",
                    "amount_usd": "12.50", "mcc": "5541", "timestamp": "2026-01-02T10:00:00Z"}).encode() + b"\n"
        for number in range(start, start + count)
    )


def open_pipe():
    """Return a pipe's read end as a named binary stream, as ``publish_file`` gets standard input, and its write end."""
    read_end, write_end = os.pipe()
    stream = open(f"/dev/fd/{read_end}", "rb")
    os.close(read_end)
    return stream, write_end


@pytest.fixture
def publish_env(tmp_path):
    """Environment for ``rewardpilot publish`` children on db 9 under a prefix of its own.

    Children still running at the end, as after a failed check, are killed
    before the prefix's keys are deleted, so none can write keys afterwards.
    """
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9")
    prefix = f"rptest-linger:{uuid.uuid4().hex[:12]}:"
    env = dict(os.environ, REDIS_URL=url, RP_PREFIX=prefix, RP_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    client = redis.Redis.from_url(url)
    children: list[subprocess.Popen] = []
    yield env, client, prefix + "transactions", children
    for child in children:
        if child.poll() is None:
            child.kill()
        child.communicate()
    stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if stale:
        client.delete(*stale)
    client.close()


def start_publish(publish_env, tmp_path, *extra: str) -> subprocess.Popen:
    env, _, _, children = publish_env
    child = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "publish", "-", "--json", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )
    children.append(child)
    return child


def wait_for_length(client: redis.Redis, stream: str, count: int, process: subprocess.Popen) -> int:
    """Poll the stream until it has ``count`` entries, the child exits, or ``WAIT_SECONDS`` pass; return its length."""
    deadline = time.monotonic() + WAIT_SECONDS
    length = client.xlen(stream)
    while length < count and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        length = client.xlen(stream)
    return length


def finish(process: subprocess.Popen, last_input: bytes = b"") -> tuple[dict, str]:
    """Send ``last_input``, close stdin, wait for the child; return its JSON summary and stderr."""
    try:
        out, err = process.communicate(last_input, timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"publish did not exit; stderr: {err.decode()[-2000:]}")
    assert out, f"no summary on stdout; stderr: {err.decode()[-2000:]}"
    return json.loads(out), err.decode()


@pytest.mark.parametrize("layout", ["csv", "jsonl"])
def test_pipe_rows_published_before_end(publish_env, tmp_path, layout):
    _, client, stream, _ = publish_env
    process = start_publish(publish_env, tmp_path)
    first = HEADER + csv_rows(0, 3) if layout == "csv" else json_rows(0, 3)
    process.stdin.write(first)
    process.stdin.flush()

    seen = wait_for_length(client, stream, 3, process)

    assert process.poll() is None, "publish exited while its stdin was still open"
    assert seen == 3
    rest = csv_rows(3, 1500) if layout == "csv" else json_rows(3, 1500)
    summary, stderr = finish(process, rest)
    assert process.returncode == 0, stderr
    assert summary["rows"] == 1503
    assert summary["published"] == 1503
    assert summary["stopped"] is False
    assert client.xlen(stream) == 1503


def test_pipe_trickle_published_row_by_row(publish_env, tmp_path):
    _, client, stream, _ = publish_env
    process = start_publish(publish_env, tmp_path, "--linger-ms", "50")
    process.stdin.write(HEADER)
    process.stdin.flush()

    for number in range(5):
        process.stdin.write(csv_rows(number, 1))
        process.stdin.flush()
        seen = wait_for_length(client, stream, number + 1, process)
        assert seen == number + 1, f"row {number + 1} was not published while the pipe was open"

    summary, stderr = finish(process)
    assert process.returncode == 0, stderr
    assert summary["published"] == 5


def test_file_input_publishes_every_row(publish_env, tmp_path):
    env, client, stream, _ = publish_env
    path = tmp_path / "big.csv"
    path.write_bytes(HEADER + csv_rows(0, 2500))

    result = run_cli(["publish", str(path), "--json"], env)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["published"] == 2500
    assert client.xlen(stream) == 2500


def test_sigint_on_quiet_pipe_stops(publish_env, tmp_path):
    _, client, stream, _ = publish_env
    process = start_publish(publish_env, tmp_path)
    process.stdin.write(HEADER + csv_rows(0, 3))
    process.stdin.flush()
    assert wait_for_length(client, stream, 3, process) == 3

    process.send_signal(signal.SIGINT)
    # Wait with stdin still open: closing it would end the input and race the signal.
    try:
        process.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("publish did not stop after SIGINT while its pipe was open and quiet")
    out, err = process.communicate()

    assert process.returncode == 130, err.decode()
    summary = json.loads(out)
    assert summary["interrupted"] == "SIGINT"
    assert summary["published"] == 3
    assert summary["stopped_after_line"] == 4


def test_stop_before_first_line(publish_env, tmp_path):
    """A stop set while a pipe has sent nothing ends ``publish_file`` with an empty, stopped summary."""
    from producer import Producer, publish_file
    from rewardpilot.streams import StreamKeys

    env, client, stream, _ = publish_env
    keys = StreamKeys(prefix=env["RP_PREFIX"])
    stop = threading.Event()
    producer = Producer(client, keys, stop=stop)
    pipe, write_end = open_pipe()
    results: list = []
    with pipe:
        worker = threading.Thread(target=lambda: results.append(publish_file(
            client, keys, pipe, producer=producer, progress=False, rejects_path=tmp_path / "rejects.jsonl")))
        worker.start()
        stop.set()
        worker.join(WAIT_SECONDS)
        stopped = not worker.is_alive()
        os.close(write_end)  # ends a publish that missed the stop, so the test never hangs
        worker.join(WAIT_SECONDS)

    assert stopped, "publish_file did not see the stop while the pipe was quiet"
    summary = results[0]
    assert summary.stopped is True
    assert summary.rows == 0
    assert summary.published == 0
    assert client.xlen(stream) == 0


def test_stop_mid_line_keeps_sent_rows(publish_env, tmp_path):
    """A stop while the pipe contains half a line keeps the rows already sent and counts the half line as unread."""
    from producer import Producer, publish_file
    from rewardpilot.streams import StreamKeys

    env, client, stream, _ = publish_env
    keys = StreamKeys(prefix=env["RP_PREFIX"])
    stop = threading.Event()
    producer = Producer(client, keys, stop=stop)
    pipe, write_end = open_pipe()
    results: list = []
    with pipe:
        worker = threading.Thread(target=lambda: results.append(publish_file(
            client, keys, pipe, producer=producer, progress=False, rejects_path=tmp_path / "rejects.jsonl")))
        worker.start()
        os.write(write_end, HEADER + csv_rows(0, 2) + b"t2,u1,Shell,ga")
        deadline = time.monotonic() + WAIT_SECONDS
        while client.xlen(stream) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        worker.join(WAIT_SECONDS)
        stopped = not worker.is_alive()
        os.close(write_end)
        worker.join(WAIT_SECONDS)

    assert stopped, "publish_file did not see the stop while the pipe was quiet"
    summary = results[0]
    assert summary.stopped is True
    assert summary.rows == 2
    assert summary.published == 2
    assert summary.unpublished == 0
    assert summary.stopped_after_line == 3
    assert client.xlen(stream) == 2


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_linger_ms_invalid_rejected(publish_env, tmp_path, value):
    env, _, _, _ = publish_env

    result = run_cli(["publish", "-", "--linger-ms", value], env, input="")

    assert result.returncode == 2
    assert "Invalid value for '--linger-ms'" in result.stderr

