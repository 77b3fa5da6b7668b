"""``publish --job`` on a job that no run made, and ``publish --max-backlog``."""

from __future__ import annotations

import json

from conftest import invoke_cli, one_server
from test_cli_trial_fixes import write_gas_csv
from rewardpilot.job import DEFAULT_JOB_KEEP_SECONDS, keep_key, record_keep
from rewardpilot.streams import StreamKeys


@one_server
def test_new_job_gets_default_expiry(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    job = StreamKeys(prefix=keys.prefix, job="fresh")

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(tmp_path / "gas.csv"), "--job", "fresh"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "job 'fresh' has no expiry yet" in completed.stderr
    assert "expire in 30d" in completed.stderr
    assert sync_client.xlen(job.transactions) == 3
    assert 0 < sync_client.ttl(job.transactions) <= DEFAULT_JOB_KEEP_SECONDS
    assert 0 < sync_client.ttl(keep_key(job)) <= DEFAULT_JOB_KEEP_SECONDS


@one_server
def test_existing_job_keeps_its_expiry(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    job = StreamKeys(prefix=keys.prefix, job="short")
    record_keep(sync_client, job, 600)

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(tmp_path / "gas.csv"), "--job", "short", "--json"],
                           cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout)["published"] == 3
    assert "has no expiry yet" not in completed.stderr
    assert 0 < sync_client.ttl(job.transactions) <= 600


@one_server
def test_max_backlog_zero_turns_wait_off(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    sync_client.xgroup_create(keys.transactions, keys.group(), id="$", mkstream=True)
    sync_client.xadd(keys.transactions, {"data": "{}"})

    waiting = invoke_cli(["--prefix", keys.prefix, "publish", str(tmp_path / "gas.csv"), "--max-backlog", "0"], cli_env)

    assert waiting.returncode == 0, waiting.stderr[-2000:]
    assert "waiting for consumers" not in waiting.stderr
    assert sync_client.xlen(keys.transactions) == 4


def test_max_backlog_rejects_negative(keys, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(tmp_path / "gas.csv"), "--max-backlog", "-1"],
                           cli_env)

    assert completed.returncode == 2
    assert "--max-backlog" in completed.stderr


def test_max_backlog_default_matches_producer():
    from producer.publisher import DEFAULT_MAX_BACKLOG as producer_default
    from rewardpilot.cli.publish_cmd import DEFAULT_MAX_BACKLOG as cli_default

    assert cli_default == producer_default


@one_server
def test_run_counts_rows_published_earlier(keys, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    assert invoke_cli(["--prefix", keys.prefix, "publish", str(tmp_path / "gas.csv"), "--job", "again"],
                      cli_env).returncode == 0

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(tmp_path / "gas.csv"), "--job", "again", "--json"],
                           cli_env)

    summary = json.loads(completed.stdout)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert summary["already_published"] == 3
    assert summary["total_transactions"] == 3
    assert summary["successful"] == 3
