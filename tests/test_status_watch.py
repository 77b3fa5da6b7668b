"""``rewardpilot status --watch`` and the results-per-second reading behind it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT, ValkeyProcess, one_server, run_cli
from rewardpilot.cli.status_cmd import _render
from rewardpilot.status import RateReading, ResultRate, entries_added


def test_result_rate_needs_two_readings():
    rate = ResultRate(window_seconds=60)

    assert rate.add(0.0, 100) is None
    assert rate.add(0.0, 150) is None  # no time has passed, so still no rate


def test_result_rate_over_window():
    rate = ResultRate(window_seconds=60)
    rate.add(0.0, 100)

    # (400 - 100) results in the 10 s since the first reading.
    assert rate.add(10.0, 400) == RateReading(per_second=30.0, seconds=10.0)
    # At 70 s the reading at 0 s is older than the window once the one at 10 s
    # is also a full window old, so the rate is (1000 - 400) / (70 - 10).
    assert rate.add(70.0, 1000) == RateReading(per_second=10.0, seconds=60.0)


def test_entries_added_survives_trim(sync_client, keys):
    stream = keys.results("live")
    for index in range(3):
        sync_client.xadd(stream, {"data": str(index)})
    sync_client.xtrim(stream, maxlen=1, approximate=False)

    assert sync_client.xlen(stream) == 1
    assert entries_added(sync_client, stream) == 3


def test_entries_added_missing_stream(sync_client, keys):
    assert entries_added(sync_client, keys.results("never-written")) == 0


def test_render_shows_results_rate():
    snapshot = {
        "transactions": {"stream": "rp:tx", "length": 5, "groups": [{
            "name": "rp-consumers", "lag": 2, "pending": 1, "oldest_pending_age_ms": 1500,
            "consumers": [{"name": "c1", "pending": 1, "idle_ms": 250}],
        }]},
        "results": {"live": 3},
        "dead_letters": 4,
        "rate_limit": None,
        "results_per_second": 12.5,
        "results_rate_seconds": 61.2,
    }
    caption = str(_render(snapshot).caption)

    assert "results/s over the last 61 s: 12.5" in caption
    assert "dead letters: 4" in caption
    assert "not in use" in caption


def test_render_rate_first_minute():
    """Before the watch is a minute old, the rate is labelled as the average since it started."""
    snapshot = {
        "transactions": {"stream": "rp:tx", "length": 0, "groups": []},
        "results": {"live": 1500}, "dead_letters": 0, "rate_limit": None,
        "results_per_second": 370.5, "results_rate_seconds": 4.05,
    }

    caption = str(_render(snapshot).caption)

    assert "results/s over the 4.0 s since the watch started: 370.5" in caption
    assert "last minute" not in caption


def test_render_without_rate_yet():
    snapshot = {
        "transactions": {"stream": "rp:tx", "length": 0, "groups": []},
        "results": {"live": 0}, "dead_letters": 0, "rate_limit": None, "results_per_second": None,
    }

    assert "needs two refreshes" in str(_render(snapshot).caption)


def test_render_one_shot_points_to_watch():
    snapshot = {
        "transactions": {"stream": "rp:tx", "length": 0, "groups": []},
        "results": {"live": 0}, "dead_letters": 0, "rate_limit": None,
    }

    caption = str(_render(snapshot).caption)
    assert "results/s: shown with --watch" in caption
    assert "needs two refreshes" not in caption


@one_server
def test_watch_stops_after_count(cli_env, keys):
    completed = run_cli(["--prefix", keys.prefix, "status", "--watch", "--interval", "0.1", "--count", "2"], cli_env,
                        timeout=60)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "since the watch started" in completed.stdout


@one_server
def test_watch_into_pipe_prints_every_view(cli_env, keys):
    """Without a terminal each refresh is printed in turn, the first one included."""
    completed = run_cli(["--prefix", keys.prefix, "status", "--watch", "--interval", "0.1", "--count", "2"], cli_env,
                        timeout=60)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.count("results/s") == 2
    assert "results/s: - (needs two refreshes)" in completed.stdout
    assert "s since the watch started: 0.0" in completed.stdout


@one_server
def test_watch_rejects_zero_interval(cli_env, keys):
    completed = run_cli(["--prefix", keys.prefix, "status", "--watch", "--interval", "0"], cli_env, timeout=60)

    assert completed.returncode == 2
    assert "--interval 0.0" in completed.stderr


@one_server
def test_watch_json_line_per_refresh(cli_env, keys, sync_client):
    sync_client.xadd(keys.results(), {"data": "first"})
    process = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "status", "--watch", "--json",
         "--interval", "0.1", "--count", "600"],
        env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        first = json.loads(process.stdout.readline())  # read before the next results, so they come after it
        for index in range(6):
            sync_client.xadd(keys.results(), {"data": str(index)})
        lines = [first]
        while lines[-1]["results"]["live"] < 7:
            line = process.stdout.readline()
            assert line, "the watch ended before it saw the new results"
            lines.append(json.loads(line))
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)

    assert "Traceback" not in err
    assert first["results_per_second"] is None
    assert first["results_rate_seconds"] is None
    assert first["results"]["live"] == 1
    last = lines[-1]
    assert last["results_rate_seconds"] > 0
    # The window starts at the first reading, so the rate covers the six new results. Both figures are
    # rounded to 3 places, so their product can be off by up to half a thousandth of the seconds.
    error = 0.0005 * last["results_rate_seconds"] + 0.0005 * last["results_per_second"] + 0.001
    assert last["results_per_second"] * last["results_rate_seconds"] == pytest.approx(6, abs=error)
    assert all("jobs" in line and "transactions" in line for line in lines)


@one_server
def test_one_shot_json_rate_null(cli_env, keys):
    completed = run_cli(["--prefix", keys.prefix, "status", "--json"], cli_env, timeout=60)

    assert completed.returncode == 0, completed.stderr[-2000:]
    snapshot = json.loads(completed.stdout)
    assert snapshot["results_per_second"] is None
    assert snapshot["results_rate_seconds"] is None


@one_server
def test_count_without_watch_exit_two(cli_env, keys):
    completed = run_cli(["--prefix", keys.prefix, "status", "--count", "2"], cli_env, timeout=60)

    assert completed.returncode == 2
    assert "--count 2 only applies with --watch" in " ".join(completed.stderr.split())


def _read_until(process, text: str, deadline: float) -> bool:
    """Read the watch's stdout line by line until ``text`` appears or ``deadline`` (monotonic) passes."""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            return False
        if text in line:
            return True
    return False


def test_watch_survives_redis_restart(cli_env, tmp_path):
    """A watch shows the outage and renders the table again once Redis is back, without a traceback."""
    server = ValkeyProcess(tmp_path / "data")
    server.start()
    env = {**cli_env, "REDIS_URL": server.url}
    process = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", "watch-restart:", "status", "--watch",
         "--interval", "0.2", "--count", "600"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        assert _read_until(process, "results/s", deadline), "the first view never appeared"

        server.stop()
        assert _read_until(process, "cannot reach Redis", deadline), "the outage was not shown"

        server.start()
        assert _read_until(process, "results/s", deadline), "the table did not come back after the restart"
        assert process.poll() is None
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
        server.stop()

    assert "Traceback" not in stderr
