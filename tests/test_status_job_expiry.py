"""``rewardpilot status --job`` shows when the job's keys expire: the time left and the UTC time."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import invoke_cli, one_server
from rewardpilot.cli.status_cmd import _expiry_text, _time_left_text
from rewardpilot.job import keep_key, record_keep
from rewardpilot.status import collect_status, job_expiry
from rewardpilot.streams import StreamKeys
from test_job_keep import example_head

WEEK = 7 * 86_400


def flat(text: str) -> str:
    return " ".join(text.split())


def status(keys: StreamKeys, cli_env, *args: str):
    return invoke_cli(["--prefix", keys.prefix, "status", *args], {**cli_env, "COLUMNS": "200"})


def make_job(client, keys: StreamKeys, job: str, *, stream_ttl: int | None, keep: int | None) -> StreamKeys:
    """Create a job's transactions stream, with a TTL and a recorded --keep when given."""
    job_keys = StreamKeys(prefix=keys.prefix, job=job)
    client.xadd(job_keys.transactions, {"data": "{}"})
    if stream_ttl is not None:
        client.expire(job_keys.transactions, stream_ttl)
    if keep is not None:
        record_keep(client, job_keys, keep)
    return job_keys


@one_server
def test_json_has_expiry(keys, cli_env, sync_client):
    make_job(sync_client, keys, "j1", stream_ttl=WEEK - 100, keep=WEEK)
    before = datetime.now(timezone.utc)

    completed = status(keys, cli_env, "--job", "j1", "--json")

    assert completed.returncode == 0, completed.stderr[-2000:]
    expiry = json.loads(completed.stdout)["job_expiry"]
    assert WEEK - 110 <= expiry["remaining_seconds"] <= WEEK - 100
    assert expiry["keep_seconds"] == WEEK
    assert expiry["expires_at"].endswith("Z")
    expires_at = datetime.fromisoformat(expiry["expires_at"].replace("Z", "+00:00"))
    expected = before + timedelta(seconds=expiry["remaining_seconds"])
    assert abs((expires_at - expected).total_seconds()) <= 10


@one_server
def test_table_shows_expiry(keys, cli_env, sync_client):
    make_job(sync_client, keys, "j1", stream_ttl=WEEK - 5400, keep=WEEK)

    completed = status(keys, cli_env, "--job", "j1")

    assert completed.returncode == 0, completed.stderr[-2000:]
    text = flat(completed.stdout)
    assert "job expires in 6 d 22 h, at " in text
    assert " UTC (run --keep 7d)" in text


@one_server
def test_job_without_keep_record(keys, cli_env, sync_client):
    make_job(sync_client, keys, "old", stream_ttl=5000, keep=None)

    as_json = status(keys, cli_env, "--job", "old", "--json")
    table = status(keys, cli_env, "--job", "old")

    expiry = json.loads(as_json.stdout)["job_expiry"]
    assert expiry["keep_seconds"] is None
    assert 4990 <= expiry["remaining_seconds"] <= 5000
    assert "job expires in 1 h 23 min, at " in flat(table.stdout)
    assert "--keep" not in table.stdout


@one_server
def test_job_never_expiring(keys, cli_env, sync_client):
    make_job(sync_client, keys, "forever", stream_ttl=None, keep=None)

    as_json = status(keys, cli_env, "--job", "forever", "--json")
    table = status(keys, cli_env, "--job", "forever")

    assert as_json.returncode == 0, as_json.stderr[-2000:]
    assert json.loads(as_json.stdout)["job_expiry"] is None
    assert "job keys: no expiry set, so they stay until deleted" in flat(table.stdout)


@one_server
def test_live_streams_no_expiry(keys, cli_env, sync_client):
    sync_client.xadd(keys.transactions, {"data": "{}"})

    as_json = status(keys, cli_env, "--json")
    table = status(keys, cli_env)

    assert json.loads(as_json.stdout)["job_expiry"] is None
    assert "expires" not in table.stdout
    assert "expiry" not in table.stdout


@one_server
def test_run_keep_shows_in_status(keys, cli_env, tmp_path):
    ran = invoke_cli(["--prefix", keys.prefix, "run", str(example_head(tmp_path, rows=20)), "--json", "--keep", "2h",
                      "--demo-wallets"], cli_env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    job = json.loads(ran.stdout.strip().splitlines()[-1])["job"]

    completed = status(keys, cli_env, "--job", job, "--json")

    expiry = json.loads(completed.stdout)["job_expiry"]
    assert expiry["keep_seconds"] == 7200
    assert 7000 <= expiry["remaining_seconds"] <= 7200


def test_expiry_uses_shorter_ttl(sync_client, keys):
    job_keys = make_job(sync_client, keys, "j2", stream_ttl=300, keep=WEEK)
    now = time.time()

    expiry = job_expiry(sync_client, job_keys, now)
    snapshot = collect_status(sync_client, job_keys)

    assert 290 <= expiry["remaining_seconds"] <= 300
    assert sync_client.ttl(keep_key(job_keys)) > 300
    assert snapshot["job_expiry"]["keep_seconds"] == WEEK
    assert job_expiry(sync_client, keys, now) is None


@pytest.mark.parametrize("seconds, text", [
    (1, "1 s"), (61, "1 min 1 s"), (3600, "1 h"), (3661, "1 h 1 min"), (WEEK, "7 d"), (WEEK - 1, "6 d 23 h"),
    (86_430, "1 d"),
])
def test_time_left_text(seconds, text):
    assert _time_left_text(seconds) == text


def test_expiry_text_forms():
    expiry = {"remaining_seconds": 90, "expires_at": "2026-11-08T12:00:00Z", "keep_seconds": 86_400}

    assert _expiry_text(expiry) == "job expires in 1 min 30 s, at 2026-11-08 12:00:00 UTC (run --keep 24h)"
    assert _expiry_text({**expiry, "keep_seconds": None}) == "job expires in 1 min 30 s, at 2026-11-08 12:00:00 UTC"
    assert _expiry_text(None) == "job keys: no expiry set, so they stay until deleted"
