"""``rewardpilot run --keep``: everything a job writes expires after the age it names."""

from __future__ import annotations

import json

import pytest
import redis

from conftest import ROOT, invoke_cli, one_server
from rewardpilot.job import expire_job
from rewardpilot.partitions import count_key, partition_streams
from rewardpilot.streams import StreamKeys

KEEP = 2 * 3600


def example_head(tmp_path, rows: int = 300):
    source = tmp_path / "head.csv"
    lines = (ROOT / "examples" / "transactions.csv").read_text().splitlines()[: rows + 1]
    source.write_text("\n".join(lines) + "\n")
    return source


def run_json(cli_env, keys, source, *options) -> dict:
    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json", *options], cli_env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def ttls(client: redis.Redis, pattern: str) -> list[int]:
    return [client.ttl(name) for name in client.scan_iter(match=pattern, count=1000)]


@pytest.fixture
def client(redis_url):
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@one_server
def test_job_keys_expire_after_keep(cli_env, keys, tmp_path, client):
    summary = run_json(cli_env, keys, example_head(tmp_path), "--keep", "2h", "--demo-wallets")
    job = StreamKeys(prefix=keys.prefix, job=summary["job"])

    assert summary["keep_seconds"] == KEEP
    for name in (job.transactions, job.results(), count_key(job)):
        assert 0 < client.ttl(name) <= KEEP, name

    markers = ttls(client, job.result_marker("live", "*"))
    assert len(markers) == summary["successful"]
    assert all(0 < ttl <= KEEP for ttl in markers)

    published = ttls(client, job.published_marker("*"))
    assert len(published) == summary["total_transactions"]
    assert all(0 < ttl <= KEEP for ttl in published)

    caps = ttls(client, job.cap_spend("*"))
    assert caps
    assert all(0 < ttl <= KEEP for ttl in caps)


@one_server
def test_live_streams_never_expire(cli_env, keys, tmp_path, client):
    completed = invoke_cli(["--prefix", keys.prefix, "run", str(example_head(tmp_path, rows=20)), "--json",
                            "--live", "--keep", "2h"], cli_env)
    summary = json.loads(completed.stdout.strip().splitlines()[-1])

    assert "subscribe --from-start" in " ".join(completed.stderr.split())
    assert "--job" not in completed.stderr

    assert summary["successful"] == 20
    assert client.ttl(keys.transactions) == -1
    assert client.ttl(keys.results()) == -1
    markers = ttls(client, keys.result_marker("live", "*"))
    assert len(markers) == 20
    assert all(0 < ttl <= KEEP for ttl in markers)


@one_server
def test_invalid_keep_exit_two(cli_env, keys, tmp_path):
    completed = invoke_cli(["--prefix", keys.prefix, "run", str(example_head(tmp_path, rows=5)), "--keep", "soon"],
                           cli_env)

    assert completed.returncode == 2
    assert "--keep: age 'soon' is invalid" in " ".join(completed.stderr.split())


def test_expire_job_partition_streams(client, keys):
    job = StreamKeys(prefix=keys.prefix, job="j1")
    streams = partition_streams(job, 3)
    for name in [job.results(), *streams]:
        client.xadd(name, {"data": "{}"})

    expired = expire_job(client, job, 600, partitions=3)

    assert sorted(expired) == sorted([job.results(), *streams])
    assert all(0 < client.ttl(name) <= 600 for name in streams)


@one_server
def test_demo_wallets_only_on_request(cli_env, keys, tmp_path, client):
    source = example_head(tmp_path, rows=20)

    run_json(cli_env, keys, source)
    assert client.exists(keys.wallet("demo-foodie")) == 0

    run_json(cli_env, keys, source, "--demo-wallets")
    assert client.exists(keys.wallet("demo-foodie")) == 1
