"""Marker TTLs of `publish --job`, `replay --job` and `run`: never longer than the job.

`publish --job` gives its publish markers the time the job's keys have
left, not the 24-hour default of `--dedup-window`, so the same rows are
skipped until the job expires and never after. `run --job` gives them its
`--keep`. A replay of a job writes its result markers and cap spend with
the job's remaining lifetime, and its results stream gets it when the
replay ends.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from conftest import invoke_cli, one_server
from test_cli_trial_fixes import HEADER, write_gas_csv
from rewardpilot import wallets
from rewardpilot.engine import RulesEngine
from rewardpilot.job import publish_marker_seconds, record_keep
from rewardpilot.replay import InvalidReplayError, replay_async
from rewardpilot.streams import StreamKeys

DAY = 24 * 3600
DEFAULT_WINDOW = DAY  # publish --dedup-window unset, without --job


def marker_ttls(client, pattern: str) -> list[int]:
    return sorted(client.ttl(name) for name in client.scan_iter(match=pattern, count=1000))


def publish(keys, cli_env, source, *options):
    return invoke_cli(["--prefix", keys.prefix, "publish", str(source), *options], cli_env)


@pytest.mark.parametrize(
    ("requested", "remaining", "expected"),
    [
        (None, 2 * DAY, 2 * DAY),  # unset: the job's lifetime, even past the 24-hour default
        (3600, 2 * DAY, 3600),  # a shorter window is kept
        (10 * DAY, 2 * DAY, 2 * DAY),  # a longer one is cut to the job
        (0, 2 * DAY, 0),  # 0 still turns the check off
        (None, 60, 60),
    ],
)
def test_publish_marker_seconds(requested, remaining, expected):
    assert publish_marker_seconds(requested, remaining) == expected


@one_server
def test_publish_job_markers_follow_job(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    job = StreamKeys(prefix=keys.prefix, job="long")
    record_keep(sync_client, job, 3 * DAY)

    completed = publish(keys, cli_env, tmp_path / "gas.csv", "--job", "long")

    ttls = marker_ttls(sync_client, job.published_marker("*"))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(ttls) == 3
    assert all(DEFAULT_WINDOW < ttl <= 3 * DAY for ttl in ttls), ttls


@one_server
def test_publish_job_window_capped(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    job = StreamKeys(prefix=keys.prefix, job="short")
    record_keep(sync_client, job, 600)

    completed = publish(keys, cli_env, tmp_path / "gas.csv", "--job", "short", "--dedup-window", "7d")

    ttls = marker_ttls(sync_client, job.published_marker("*"))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(ttls) == 3
    assert all(0 < ttl <= 600 for ttl in ttls), ttls


@one_server
def test_publish_job_shorter_window_kept(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    job = StreamKeys(prefix=keys.prefix, job="hour")
    record_keep(sync_client, job, 3 * DAY)

    completed = publish(keys, cli_env, tmp_path / "gas.csv", "--job", "hour", "--dedup-window", "1h")

    ttls = marker_ttls(sync_client, job.published_marker("*"))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(ttls) == 3
    assert all(0 < ttl <= 3600 for ttl in ttls), ttls


@one_server
def test_publish_job_window_zero_no_markers(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    job = StreamKeys(prefix=keys.prefix, job="off")
    record_keep(sync_client, job, 3 * DAY)

    completed = publish(keys, cli_env, tmp_path / "gas.csv", "--job", "off", "--dedup-window", "0")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert sync_client.xlen(job.transactions) == 3
    assert marker_ttls(sync_client, job.published_marker("*")) == []


@one_server
def test_publish_live_keeps_default_window(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")

    completed = publish(keys, cli_env, tmp_path / "gas.csv")

    ttls = marker_ttls(sync_client, keys.published_marker("*"))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(ttls) == 3
    assert all(DEFAULT_WINDOW - 60 < ttl <= DEFAULT_WINDOW for ttl in ttls), ttls


@one_server
def test_run_job_markers_follow_keep(keys, sync_client, cli_env, tmp_path):
    """`run --job` gives its publish markers the job's --keep, past the 24-hour default."""
    write_gas_csv(tmp_path / "gas.csv")
    job = StreamKeys(prefix=keys.prefix, job="kept")

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(tmp_path / "gas.csv"), "--job", "kept",
                            "--keep", "3d", "--json"], cli_env)

    ttls = marker_ttls(sync_client, job.published_marker("*"))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(ttls) == 3
    assert all(3 * DAY - 60 < ttl <= 3 * DAY for ttl in ttls), ttls


@one_server
def test_run_live_keeps_default_window(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(tmp_path / "gas.csv"), "--live", "--json"], cli_env)

    ttls = marker_ttls(sync_client, keys.published_marker("*"))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(ttls) == 3
    assert all(DEFAULT_WINDOW - 60 < ttl <= DEFAULT_WINDOW for ttl in ttls), ttls


def write_grocery_csv(path) -> None:
    """Write two $100.00 grocery purchases by u1, which earn under Blue Cash Preferred's yearly cap."""
    rows = [f"k{index},u1,KROGER #512,groceries,100.00,5411,2026-11-0{index + 1}T15:00:00Z" for index in range(2)]
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")


@one_server
def test_replay_job_expires_with_job(keys, sync_client, cli_env, tmp_path):
    write_grocery_csv(tmp_path / "groceries.csv")
    wallets.set_wallet(sync_client, keys, "u1", ["amex-blue-cash-preferred"], RulesEngine.default().catalog)
    job = StreamKeys(prefix=keys.prefix, job="rj")
    ran = invoke_cli(["--prefix", keys.prefix, "run", str(tmp_path / "groceries.csv"), "--job", "rj",
                      "--keep", "2h", "--json"], cli_env)
    assert ran.returncode == 0, ran.stderr[-2000:]

    replayed = invoke_cli(["--prefix", keys.prefix, "replay", "--job", "rj", "--start", "0", "--run", "again",
                           "--json"], cli_env)

    markers = marker_ttls(sync_client, job.result_marker("again", "*"))
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert len(markers) == 2
    assert all(0 < ttl <= 2 * 3600 for ttl in markers), markers
    assert 0 < sync_client.ttl(job.results("again")) <= 2 * 3600
    assert 0 < sync_client.ttl(job.cap_spend("u1", "again")) <= 2 * 3600
    assert "this replay's results, de-duplication markers and cap spend expire with them" in " ".join(
        replayed.stderr.split())


@one_server
def test_replay_outside_job_keeps_markers(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    assert invoke_cli(["--prefix", keys.prefix, "run", str(tmp_path / "gas.csv"), "--live"], cli_env).returncode == 0

    replayed = invoke_cli(["--prefix", keys.prefix, "replay", "--start", "0", "--run", "again"], cli_env)

    markers = marker_ttls(sync_client, keys.result_marker("again", "*"))
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert markers == [-1, -1, -1]
    assert sync_client.ttl(keys.results("again")) == -1
    assert "expire with them" not in replayed.stderr


def test_replay_ttl_must_be_positive(keys, redis_url):
    async def replay() -> None:
        client = aioredis.from_url(redis_url)
        try:
            await replay_async(client, keys, start="0", run="again", ttl_seconds=0)
        finally:
            await client.aclose()

    with pytest.raises(InvalidReplayError, match="ttl_seconds must be 1 or more, got 0"):
        asyncio.run(replay())
