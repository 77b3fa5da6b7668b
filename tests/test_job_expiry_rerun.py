"""A rerun of a job sets every key of the job to its --keep, and `consume --job` and `replay --job` cut keys back to the job.

A marker that expires before the rest of the job lets a later rerun
publish and process its row again, so the job's results stream gets a
second result for the same transaction_id.
"""

from __future__ import annotations

import json
import re

import pytest
import redis

from conftest import ROOT, invoke_cli, one_server
from rewardpilot.job import expire_job_keys, keep_key, record_keep
from rewardpilot.streams import InvalidJobIdError, StreamKeys

HOUR = 3600
DAY = 24 * HOUR
DEFAULT_KEEP = 30 * DAY
BLUE_CASH = "amex-blue-cash-preferred"


def example_head(tmp_path, rows: int = 10):
    source = tmp_path / "head.csv"
    lines = (ROOT / "examples" / "transactions.csv").read_text().splitlines()[: rows + 1]
    source.write_text("\n".join(lines) + "\n")
    return source


def run_job(cli_env, keys, source, job: str, *options):
    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--job", job, "--sample", "0", "--json",
                            *options], cli_env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def ttls(client: redis.Redis, pattern: str) -> list[int]:
    return sorted(client.ttl(name) for name in client.scan_iter(match=pattern, count=1000))


def job_ttls(client: redis.Redis, job: StreamKeys) -> dict[str, int]:
    return {name.decode(): client.ttl(name) for name in client.scan_iter(match=f"{job.base}*", count=1000)}


@pytest.fixture
def client(redis_url):
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


# run: every key of the job takes the new --keep


@one_server
def test_longer_keep_lengthens_markers(cli_env, keys, tmp_path, client):
    source = example_head(tmp_path)
    run_job(cli_env, keys, source, "j2", "--keep", "30s")

    again = run_job(cli_env, keys, source, "j2", "--keep", "2h")

    job = StreamKeys(prefix=keys.prefix, job="j2")
    assert again["already_published"] == 10
    result_markers = ttls(client, job.result_marker("live", "*"))
    published_markers = ttls(client, job.published_marker("*"))
    assert len(result_markers) == 10
    assert len(published_markers) == 10
    assert result_markers[0] > HOUR, result_markers
    assert published_markers[0] > HOUR, published_markers
    assert all(HOUR < ttl <= 2 * HOUR for ttl in job_ttls(client, job).values())


@one_server
def test_shorter_keep_shortens_markers(cli_env, keys, tmp_path, client):
    source = example_head(tmp_path)
    run_job(cli_env, keys, source, "j3", "--keep", "2h", "--demo-wallets")

    run_job(cli_env, keys, source, "j3", "--keep", "60s")

    job = StreamKeys(prefix=keys.prefix, job="j3")
    everything = job_ttls(client, job)
    assert any(name.startswith(job.cap_spend("")) for name in everything), sorted(everything)
    assert all(0 < ttl <= 60 for ttl in everything.values()), everything


@one_server
def test_default_keep_lengthens_replay(cli_env, keys, tmp_path, client):
    source = example_head(tmp_path)
    run_job(cli_env, keys, source, "j1", "--keep", "2h")
    replayed = invoke_cli(["--prefix", keys.prefix, "replay", "--job", "j1", "--start", "0", "--run", "jr1"], cli_env)
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    job = StreamKeys(prefix=keys.prefix, job="j1")
    assert 0 < client.ttl(job.results("jr1")) <= 2 * HOUR

    # No --keep: the default of 30 days, which the run prints as the job's expiry.
    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--job", "j1", "--sample", "0"], cli_env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "the job's keys expire in 30d (--keep)" in " ".join(completed.stderr.split())
    assert client.ttl(job.results("jr1")) > DEFAULT_KEEP - HOUR
    replay_markers = ttls(client, job.result_marker("jr1", "*"))
    assert len(replay_markers) == 10
    assert replay_markers[0] > DEFAULT_KEEP - HOUR
    assert ttls(client, job.result_marker("live", "*"))[0] > DEFAULT_KEEP - HOUR


# consume --job and replay --job: nothing outlives the job, and shorter TTLs stay


def add_outliving_keys(client: redis.Redis, job: StreamKeys, run: str) -> tuple[str, str]:
    """Add a marker that would outlive the job by hours and one with a short TTL; return their names."""
    outliving = job.result_marker(run, "written-late")
    short = job.result_marker(run, "short-ttl")
    client.set(outliving, "1-0", ex=5 * HOUR)
    client.set(short, "2-0", ex=60)
    return outliving, short


@one_server
def test_consume_cuts_markers_to_job(cli_env, keys, tmp_path, client):
    run_job(cli_env, keys, example_head(tmp_path), "jc", "--keep", "2h")
    job = StreamKeys(prefix=keys.prefix, job="jc")
    outliving, short = add_outliving_keys(client, job, "live")

    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--job", "jc", "--block-ms", "100",
                           "--wallet", BLUE_CASH], cli_env)

    assert consumed.returncode == 0, consumed.stderr[-3000:]
    assert 0 < client.ttl(outliving) <= 2 * HOUR
    assert 0 < client.ttl(short) <= 60


@one_server
def test_replay_cuts_markers_to_job(cli_env, keys, tmp_path, client):
    run_job(cli_env, keys, example_head(tmp_path), "jp", "--keep", "2h")
    job = StreamKeys(prefix=keys.prefix, job="jp")
    outliving, short = add_outliving_keys(client, job, "jr")

    replayed = invoke_cli(["--prefix", keys.prefix, "replay", "--job", "jp", "--start", "0", "--run", "jr"], cli_env)

    assert replayed.returncode == 0, replayed.stderr[-3000:]
    assert 0 < client.ttl(outliving) <= 2 * HOUR
    assert 0 < client.ttl(short) <= 60
    assert 0 < client.ttl(job.results("jr")) <= 2 * HOUR


# expire_job_keys


def test_expire_job_keys_sets_every_kind(client, keys):
    job = StreamKeys(prefix=keys.prefix, job="k1")
    client.xadd(job.transactions, {"data": "{}"})
    client.xadd(f"{job.transactions}:p0", {"data": "{}"})
    client.xadd(job.results("r1"), {"data": "{}"})
    client.set(job.result_marker("live", "t:1"), "1-0", ex=30)
    client.set(job.published_marker("t1"), "1", ex=30)
    client.hset(job.cap_spend("u1"), "field", 100)
    client.hset(job.cap_spend("u1", "r1"), "field", 100)
    record_keep(client, job, 30)

    count = expire_job_keys(client, job, 2 * HOUR, chunk=2)

    everything = job_ttls(client, job)
    assert count == 8
    assert len(everything) == 8
    assert all(HOUR < ttl <= 2 * HOUR for ttl in everything.values()), everything
    assert client.get(keep_key(job)) == b"30"  # the recorded --keep stays; only its TTL follows


def test_expire_job_keys_never_lengthens_leases(client, keys):
    job = StreamKeys(prefix=keys.prefix, job="k2")
    leases = [f"{job.base}lease:rp-consumers:p0", f"{job.base}consumer-name:rp-consumers:c1",
              f"{job.base}replay-lock:r1"]
    for name in leases:
        client.set(name, "holder", px=20_000)
    stuck = f"{job.base}lease:rp-consumers:p1"
    client.set(stuck, "holder")  # a lease without expiry gets the job's

    expire_job_keys(client, job, 2 * HOUR)

    for name in leases:
        assert 0 < client.pttl(name) <= 20_000, name
    assert HOUR < client.ttl(stuck) <= 2 * HOUR


def test_expire_job_keys_only_shorten(client, keys):
    job = StreamKeys(prefix=keys.prefix, job="k3")
    client.set(job.result_marker("live", "short"), "1-0", ex=60)
    client.set(job.result_marker("live", "long"), "1-0", ex=5 * HOUR)
    client.set(job.result_marker("live", "none"), "1-0")

    count = expire_job_keys(client, job, 2 * HOUR, only_shorten=True)

    assert count == 2
    assert 0 < client.ttl(job.result_marker("live", "short")) <= 60
    assert HOUR < client.ttl(job.result_marker("live", "long")) <= 2 * HOUR
    assert HOUR < client.ttl(job.result_marker("live", "none")) <= 2 * HOUR


@pytest.mark.parametrize("job", ["a:b", "j[1]*", "", " j", "j" * 129, "-j"])
def test_job_ids_that_break_key_names_rejected(job):
    with pytest.raises(InvalidJobIdError, match="use 1 to 128 letters, digits"):
        StreamKeys(prefix="rp:", job=job)


def test_cli_rejects_job_id_with_colon(keys, cli_env):
    completed = invoke_cli(["--prefix", keys.prefix, "status", "--job", "a:b", "--json"], cli_env)

    assert completed.returncode == 2
    assert json.loads(completed.stdout) == {
        "error": "job id 'a:b' is invalid; use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter "
                 "or digit",
        "exit_code": 2,
    }


@pytest.mark.parametrize(
    ("job", "seconds", "chunk", "message"),
    [
        (None, 60, 1000, "live streams never expire"),
        ("j", 0, 1000, "seconds must be a whole number of 1 or more, got 0"),
        ("j", 1.5, 1000, "got 1.5"),
        ("j", True, 1000, "got True"),
        ("j", 60, 0, "chunk must be a whole number of 1 or more, got 0"),
    ],
)
def test_expire_job_keys_invalid(client, keys, job, seconds, chunk, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        expire_job_keys(client, StreamKeys(prefix=keys.prefix, job=job), seconds, chunk=chunk)


@one_server
def test_replay_job_sigterm_expires_results(keys, sync_client, cli_env, tmp_path):
    """SIGTERM during `replay --job` still gives what the replay wrote the job's expiry, and exits 143."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from orchestrator_servers import Scripted, ScriptedServer

    job = StreamKeys(prefix=keys.prefix, job="term")
    ran = invoke_cli(["--prefix", keys.prefix, "run", str(example_head(tmp_path)), "--job", "term", "--keep", "2h"],
                     cli_env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    # A results stream left without expiry, as by an earlier replay that was killed.
    sync_client.xadd(job.results("again"), {"data": "{}"})

    health = Scripted(200, b'{"endpoints": ["/recommend/batch"]}')
    hanging = Scripted(hang_seconds=60)
    with ScriptedServer({"/health": health, "/recommend/batch": hanging, "/recommend": hanging}) as orchestrator:
        process = subprocess.Popen(
            [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "replay", "--job", "term",
             "--start", "0", "--run", "again", "--orchestrator", orchestrator.url],
            env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            for _ in range(300):  # at most 30 s for the replay's group to exist
                groups = [group["name"] for group in sync_client.xinfo_groups(job.transactions)]
                if b"replay:again" in groups or "replay:again" in groups:
                    break
                time.sleep(0.1)
            time.sleep(0.5)
            os.kill(process.pid, signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=10)

    assert process.returncode == 143, stderr[-2000:]
    assert "replay stopped by SIGTERM" in " ".join(stderr.split())
    assert 0 < sync_client.ttl(job.results("again")) <= 2 * HOUR
