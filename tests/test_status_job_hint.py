"""``rewardpilot status`` names recent jobs when the live streams are empty, and ``find_jobs`` finds them."""

from __future__ import annotations

import json

import pytest

from conftest import invoke_cli, one_server
from rewardpilot import status as status_module
from rewardpilot.cli.status_cmd import _jobs_hint
from rewardpilot.partitions import count_key
from rewardpilot.status import find_jobs
from rewardpilot.streams import DEFAULT_PREFIX, StreamKeys

CSV_HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"


def add_entry(client, stream: str, entry_id: str = "*") -> None:
    client.xadd(stream, {"data": "{}"}, id=entry_id)


def job_keys(keys: StreamKeys, job: str) -> StreamKeys:
    return StreamKeys(prefix=keys.prefix, job=job)


@one_server
def test_status_hint_after_run(cli_env, keys, tmp_path):
    source = tmp_path / "one.csv"
    source.write_text(CSV_HEADER + "h1,u1,Whole Foods,groceries,20.00,5411,2026-11-02T10:00:00Z\n")
    ran = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--job", "hint-job", "--sample", "0"], cli_env)
    assert ran.returncode == 0, ran.stderr[-2000:]

    plain = invoke_cli(["--prefix", keys.prefix, "status"], cli_env)
    as_json = invoke_cli(["--prefix", keys.prefix, "status", "--json"], cli_env)

    assert plain.returncode == 0, plain.stderr[-2000:]
    assert f"1 job has streams under prefix '{keys.prefix}' (hint-job)" in plain.stderr
    assert f"See one with: rewardpilot --prefix {keys.prefix} status --job hint-job\n" in plain.stderr
    assert "hint-job" not in plain.stdout  # stdout stays the table
    assert as_json.returncode == 0, as_json.stderr[-2000:]
    assert json.loads(as_json.stdout)["jobs"] == {"count": 1, "recent": ["hint-job"], "complete": True}
    assert as_json.stderr == ""


@one_server
def test_status_no_hint_when_live_busy(cli_env, keys, sync_client):
    add_entry(sync_client, job_keys(keys, "quiet-job").transactions)
    add_entry(sync_client, keys.transactions)

    plain = invoke_cli(["--prefix", keys.prefix, "status"], cli_env)
    as_json = invoke_cli(["--prefix", keys.prefix, "status", "--json"], cli_env)

    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "quiet-job" not in plain.stderr
    assert json.loads(as_json.stdout)["jobs"] is None


@one_server
def test_status_job_view_no_lookup(cli_env, keys, sync_client):
    add_entry(sync_client, job_keys(keys, "other-job").results())
    add_entry(sync_client, job_keys(keys, "shown-job").results())

    plain = invoke_cli(["--prefix", keys.prefix, "status", "--job", "shown-job"], cli_env)
    as_json = invoke_cli(["--prefix", keys.prefix, "status", "--job", "shown-job", "--json"], cli_env)

    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "other-job" not in plain.stderr
    assert json.loads(as_json.stdout)["jobs"] is None


@one_server
def test_status_empty_server_no_jobs(cli_env, keys):
    plain = invoke_cli(["--prefix", keys.prefix, "status"], cli_env)
    as_json = invoke_cli(["--prefix", keys.prefix, "status", "--json"], cli_env)

    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "status --job" not in plain.stderr
    assert json.loads(as_json.stdout)["jobs"] == {"count": 0, "recent": [], "complete": True}


@one_server
def test_status_watch_prints_hint(cli_env, keys, sync_client):
    add_entry(sync_client, job_keys(keys, "watched-job").results())

    watched = invoke_cli(["--prefix", keys.prefix, "status", "--watch", "--count", "2", "--interval", "0.05"], cli_env)

    assert watched.returncode == 0, watched.stderr[-2000:]
    assert watched.stderr.count("status --job watched-job") == 1  # looked up on the first refresh only


def test_find_jobs_most_recent_first(sync_client, keys):
    add_entry(sync_client, job_keys(keys, "zz-oldest").results(), "1000-0")
    add_entry(sync_client, job_keys(keys, "aa-newest").results(), "3000-0")
    add_entry(sync_client, job_keys(keys, "mm-middle").transactions, "2000-0")
    add_entry(sync_client, job_keys(keys, "mm-middle").dead_letters, "1500-0")

    found = find_jobs(sync_client, keys.prefix, limit=2)

    assert found["count"] == 3
    assert found["recent"] == ["aa-newest", "mm-middle"]
    assert found["complete"] is True


def test_find_jobs_stream_kinds(sync_client, keys):
    partitioned = job_keys(keys, "parted")
    add_entry(sync_client, f"{partitioned.transactions}:p3")
    sync_client.set(count_key(partitioned), 4)
    add_entry(sync_client, job_keys(keys, "dead-only").dead_letters)
    add_entry(sync_client, f"{keys.prefix}job:with:colon:results")  # an id from before job ids were checked
    # Keys that are not a job's stream: a marker string and a replay's results stream alone.
    sync_client.set(job_keys(keys, "marker-only").published_marker("t1"), 1)
    add_entry(sync_client, job_keys(keys, "replay-only").results("r1"))

    found = find_jobs(sync_client, keys.prefix, limit=10)

    assert sorted(found["recent"]) == ["dead-only", "parted", "with:colon"]
    assert found["count"] == 3


def test_find_jobs_glob_prefix(sync_client, keys):
    """A prefix with glob characters matches only itself, not the keys the glob would match."""
    literal = StreamKeys(prefix=f"{keys.prefix}a*[b]?:")
    add_entry(sync_client, StreamKeys(prefix=literal.prefix, job="literal-job").results())
    add_entry(sync_client, StreamKeys(prefix=f"{keys.prefix}aXbY:", job="glob-match").results())

    found = find_jobs(sync_client, literal.prefix, limit=3)

    assert found["recent"] == ["literal-job"]


def test_find_jobs_stops_scanning(sync_client, keys, monkeypatch):
    batch = status_module.JOB_SCAN_BATCH
    monkeypatch.setattr(status_module, "JOB_SCAN_BATCH", 10)
    with sync_client.pipeline(transaction=False) as pipe:
        for index in range(300):
            pipe.set(f"{keys.prefix}job:bulk:published:{index}", 1)
        pipe.execute()
    add_entry(sync_client, job_keys(keys, "bulk").results())

    partial = find_jobs(sync_client, keys.prefix, limit=3, max_scan_calls=1)
    # The full scan uses the real batch size, because the server is shared with the other tests. Some
    # of them write 100,000 publish markers, more keys than 1,000 SCAN calls of COUNT 10 examine.
    monkeypatch.setattr(status_module, "JOB_SCAN_BATCH", batch)
    full = find_jobs(sync_client, keys.prefix, limit=3)

    assert partial["complete"] is False
    assert full["complete"] is True
    assert full["recent"] == ["bulk"]


@pytest.mark.parametrize(("jobs", "prefix", "expected"), [
    ({"count": 1, "recent": ["j1"], "complete": True}, DEFAULT_PREFIX,
     "the live streams are empty, but 1 job has streams under prefix 'rp:' (j1). "
     "See one with: rewardpilot status --job j1"),
    ({"count": 5, "recent": ["j5", "j4", "j3"], "complete": True}, DEFAULT_PREFIX,
     "the live streams are empty, but 5 jobs have streams under prefix 'rp:' (j5, j4, j3, most recent first). "
     "See one with: rewardpilot status --job j5"),
    ({"count": 2, "recent": ["my job", "j1"], "complete": False}, "team a:",
     "the live streams are empty, but at least 2 jobs have streams under prefix 'team a:' "
     "(my job, j1, most recent first). See one with: rewardpilot --prefix 'team a:' status --job 'my job'"),
])
def test_jobs_hint_text(jobs, prefix, expected, monkeypatch):
    monkeypatch.setattr("rewardpilot.cli.status_cmd.program_name", lambda: "rewardpilot")

    assert _jobs_hint(jobs, prefix) == expected
