"""``rewardpilot dlq list --json``: JSON lines on stdout, a note on stderr when there are none."""

from __future__ import annotations

import json

from conftest import invoke_cli, one_server
from rewardpilot.streams import StreamKeys


@one_server
def test_dlq_json_empty_note(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "list", "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout == ""
    assert f"no dead letters in {keys.dead_letters}\n" in completed.stderr


@one_server
def test_dlq_json_empty_job_note(cli_env, keys, sync_client):
    job = StreamKeys(prefix=keys.prefix, job="j1")
    sync_client.xadd(job.transactions, {"data": "{}"})  # the job exists once its run has published

    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "list", "--json", "--job", "j1"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout == ""
    assert f"no dead letters in {job.dead_letters}\n" in completed.stderr


@one_server
def test_dlq_unknown_job_exits(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "list", "--job", "no-such-job"], cli_env)

    assert completed.returncode == 2
    assert "no job 'no-such-job'" in completed.stderr
    assert completed.stdout == ""


@one_server
def test_dlq_json_lines_no_note(cli_env, keys, sync_client):
    # An entry that is not a transaction: the consumer sets it aside as a dead letter.
    sync_client.xadd(keys.transactions, {"data": "{not json"})
    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "200"], cli_env)
    assert consumed.returncode == 1, consumed.stderr[-2000:]  # a drain that dead-lettered an entry exits 1

    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "list", "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["letter"]["reason"] == "invalid entry"
    assert "no dead letters" not in completed.stderr


def test_dlq_list_help_names_format(cli_env):
    completed = invoke_cli(["dlq", "list", "--help"], {**cli_env, "COLUMNS": "200"})

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "one JSON object per line" in completed.stdout
    assert "nothing on stdout when there are none" in completed.stdout
