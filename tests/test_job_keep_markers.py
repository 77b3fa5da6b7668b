"""A job's markers and cap spend expire with its keys, and a run that finds old markers reports them and exits 1."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import redis

from conftest import ROOT, invoke_cli, one_server
from consumer.stats import PoolStats
from rewardpilot import codec
from rewardpilot.job import job_lifetime, keep_key, record_keep, summarise
from rewardpilot.models import Transaction
from rewardpilot.streams import StreamKeys

KEEP = 2 * 3600
BLUE_CASH = "amex-blue-cash-preferred"


def example_head(tmp_path, rows: int = 20):
    source = tmp_path / "head.csv"
    lines = (ROOT / "examples" / "transactions.csv").read_text().splitlines()[: rows + 1]
    source.write_text("\n".join(lines) + "\n")
    return source


def run_job(cli_env, keys, source, job: str, *options):
    return invoke_cli(["--prefix", keys.prefix, "run", str(source), "--job", job, "--sample", "0", *options],
                      cli_env)


def last_json(completed) -> dict:
    return json.loads(completed.stdout.strip().splitlines()[-1])


def add_groceries(client: redis.Redis, job: StreamKeys, count: int, user: str = "u-new") -> list[str]:
    """Add grocery purchases straight to the job's stream, as a stopped run leaves them; return their ids."""
    start = datetime(2026, 5, 4, 16, 0, tzinfo=timezone.utc)
    ids = []
    for index in range(count):
        transaction = Transaction(transaction_id=f"extra-{index:03d}", user_id=user, merchant="KROGER #512",
                                  amount_usd="40.00", mcc="5411", timestamp=start + timedelta(minutes=index))
        client.xadd(job.transactions, codec.encode_transaction(transaction))
        ids.append(transaction.transaction_id)
    return ids


def job_key_names(client: redis.Redis, job: StreamKeys) -> list[str]:
    return sorted(name.decode() for name in client.scan_iter(match=f"{job.base}*", count=1000))


@pytest.fixture
def client(redis_url):
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


# consume --job


@one_server
def test_consume_job_ttls_follow_keep(cli_env, keys, tmp_path, client):
    assert run_job(cli_env, keys, example_head(tmp_path), "j1", "--keep", "2h").returncode == 0
    job = StreamKeys(prefix=keys.prefix, job="j1")
    # A run stopped before any result leaves no results stream, so the consumer creates it.
    client.delete(job.results(), job.dead_letters)
    extra = add_groceries(client, job, 5)
    client.xadd(job.transactions, {"data": "not json"})

    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--job", "j1", "--block-ms", "100",
                            "--wallet", BLUE_CASH], cli_env)

    assert completed.returncode == 1, completed.stderr[-3000:]  # the undecodable entry is a dead letter
    assert "expire by then too, not after --marker-ttl" in " ".join(completed.stderr.split())
    for transaction_id in extra:
        assert 0 < client.ttl(job.result_marker("live", transaction_id)) <= KEEP, transaction_id
    assert 0 < client.ttl(job.cap_spend("u-new")) <= KEEP
    assert client.xlen(job.results()) == 5
    assert 0 < client.ttl(job.results()) <= KEEP
    assert client.xlen(job.dead_letters) == 1
    assert 0 < client.ttl(job.dead_letters) <= KEEP
    assert 0 < client.ttl(keep_key(job)) <= KEEP


@one_server
def test_job_id_reusable_after_keep(cli_env, keys, tmp_path, client):
    source = example_head(tmp_path)
    first = run_job(cli_env, keys, source, "j2", "--keep", "10s", "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    job = StreamKeys(prefix=keys.prefix, job="j2")
    add_groceries(client, job, 5)
    drained = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--job", "j2", "--block-ms", "100",
                          "--wallet", BLUE_CASH], cli_env)
    assert drained.returncode == 0, drained.stderr[-3000:]

    # Bounded wait for the 10 s --keep to run out; every key of the job must go with it.
    for _ in range(120):
        if not job_key_names(client, job):
            break
        time.sleep(0.5)
    assert job_key_names(client, job) == []

    again = run_job(cli_env, keys, source, "j2", "--keep", "1h", "--json")
    summary = last_json(again)
    assert again.returncode == 0, again.stderr[-3000:]
    assert summary["successful"] == 20
    assert summary["already_processed"] == 0


# run under a job id whose markers outlived its streams


def forget_streams(client: redis.Redis, job: StreamKeys) -> None:
    """Delete everything of a job except its result markers, as expiry did before markers followed --keep."""
    for name in job_key_names(client, job):
        if not name.startswith(job.result_marker("live", "")):
            client.delete(name)


@one_server
def test_run_counts_already_processed(cli_env, keys, tmp_path, client):
    source = example_head(tmp_path)
    assert run_job(cli_env, keys, source, "j3", "--keep", "1h").returncode == 0
    job = StreamKeys(prefix=keys.prefix, job="j3")
    forget_streams(client, job)
    markers = sorted(client.scan_iter(match=job.result_marker("live", "*"), count=1000))
    client.delete(*markers[:5])

    again = run_job(cli_env, keys, source, "j3", "--keep", "1h", "--json")
    summary = last_json(again)
    stderr = " ".join(again.stderr.split())

    assert again.returncode == 1
    assert summary["total_transactions"] == 20
    assert summary["successful"] == 5
    assert summary["failed"] == 0
    assert summary["already_processed"] == 15
    assert client.xlen(job.results()) == 5
    assert "15 of 20 transactions got no result in this run, because job j3 already had an outcome" in stderr
    assert "Run the file under a new job id (leave out --job)" in stderr


@one_server
def test_run_table_shows_already_processed(cli_env, keys, tmp_path, client):
    source = example_head(tmp_path)
    assert run_job(cli_env, keys, source, "j4", "--keep", "1h").returncode == 0
    forget_streams(client, StreamKeys(prefix=keys.prefix, job="j4"))

    again = run_job(cli_env, keys, source, "j4", "--keep", "1h")
    row = next((line for line in again.stdout.splitlines() if "already_processed" in line), "")

    assert again.returncode == 1
    assert row.split("│")[2].strip() == "20", again.stdout
    assert "20 of 20 transactions got no result" in " ".join(again.stderr.split())


@one_server
def test_live_run_already_processed(cli_env, keys, tmp_path, client):
    source = example_head(tmp_path, rows=10)
    first = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--live", "--json"], cli_env)
    assert first.returncode == 0, first.stderr[-3000:]
    # Without its publish markers the file is published again, so the live group reads every row twice.
    client.delete(*client.scan_iter(match=keys.published_marker("*"), count=1000))

    again = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--live", "--json"], cli_env)
    summary = last_json(again)

    assert again.returncode == 1
    assert summary["already_processed"] == 10
    assert "because the live run already had an outcome" in " ".join(again.stderr.split())
    assert "(leave out --live)" in " ".join(again.stderr.split())


# summarise and job_lifetime


@pytest.mark.parametrize(
    ("published", "results", "dead_letters", "duplicates", "expected"),
    [
        (4, 4, 0, 2, 0),  # redeliveries of entries this run settled itself
        (4, 1, 1, 2, 2),  # two transactions had markers from before
        (4, 1, 0, 0, 0),  # a stopped run: the rest is unprocessed, not already processed
        (4, 0, 0, 4, 4),
    ],
)
def test_summarise_already_processed(published, results, dead_letters, duplicates, expected):
    stats = PoolStats(results=results, dead_letters=dead_letters, duplicates=duplicates)

    summary = summarise("job-1", published, stats, publish_seconds=0.0, consume_seconds=1.0, wall_seconds=1.0)

    assert summary.already_processed == expected
    assert summary.as_dict()["already_processed"] == expected


def test_job_lifetime_reads_keep_record(client, keys):
    job = StreamKeys(prefix=keys.prefix, job="j5")

    assert job_lifetime(client, StreamKeys(prefix=keys.prefix)) is None
    assert job_lifetime(client, job) is None

    record_keep(client, job, 600)
    lifetime = job_lifetime(client, job)
    assert lifetime.keep_seconds == 600
    assert 590 <= lifetime.remaining_seconds <= 600


def test_job_lifetime_takes_shorter_ttl(client, keys):
    job = StreamKeys(prefix=keys.prefix, job="j6")
    client.xadd(job.transactions, {"data": "{}"})

    assert job_lifetime(client, job) is None  # a stream without TTL and no record: the job never expires

    client.expire(job.transactions, 120)
    assert job_lifetime(client, job).keep_seconds is None
    assert 110 <= job_lifetime(client, job).remaining_seconds <= 120

    record_keep(client, job, 600)
    assert job_lifetime(client, job).keep_seconds == 600
    assert job_lifetime(client, job).remaining_seconds <= 120
